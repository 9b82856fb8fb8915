"""Where does wall - kernel go on gpt-oss-20b? Per-kernel CUPTI list, host enqueue time, wall.

usage: python scratch/gap_probe.py OUT.json [config] [impl/variant ...]
"""
import json
import os
import sys
import time

import jax
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from bench import configs
from bench.plan import CaseSpec
from bench.runners_jax import JaxRunner
from bench.timing import Protocol

out_path = sys.argv[1]
cfg_name = sys.argv[2] if len(sys.argv) > 2 else "gpt-oss-20b"
rows = sys.argv[3:] or ["pallas/dropless", "xla/binned"]
cfg = configs.select(cfg_name)[0]
runner = JaxRunner(cfg, Protocol())
res = dict(flags=os.environ.get("XLA_FLAGS", ""), config=cfg_name, rows=[])


def dump():
  with open(out_path, "w") as f:
    json.dump(res, f, indent=1)


for row in rows:
  impl, variant = row.split("/")
  for mode in ("fwd", "fwd+bwd"):
    case = CaseSpec(config=cfg_name, component="layer", mode=mode, framework="jax",
                    impl=row, variant=variant)
    built = runner.build(case)
    compiled, compile_ms, _ = runner.prepare(built)
    args = built.inputs
    for _ in range(5):
      jax.block_until_ready(compiled(*args[0]))
    # wall: back-to-back, 20 calls per sample
    walls, enq = [], []
    for s in range(15):
      jax.block_until_ready(compiled(*args[0]))
      t0 = time.perf_counter()
      o = None
      for i in range(20):
        o = None
        o = compiled(*args[i % len(args)])
      t1 = time.perf_counter()
      jax.block_until_ready(o)
      t2 = time.perf_counter()
      enq.append((t1 - t0) * 1e3 / 20)
      walls.append((t2 - t0) * 1e3 / 20)
    # one isolated call: host dispatch time and synced time
    iso = []
    for _ in range(10):
      jax.block_until_ready(compiled(*args[0]))
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args[0]))
      iso.append((time.perf_counter() - t0) * 1e3)
    _, per = profiler.measure(compiled, aggregate=False)(*args[0])
    _, tot = profiler.measure(compiled, iterations=10)(*args[0])
    names = {}
    for n, t in per:
      k = n[:90]
      c, s_ = names.get(k, (0, 0.0))
      names[k] = (c + 1, s_ + t)
    rec = dict(row=row, mode=mode, compile_ms=compile_ms, wall_ms=float(np.median(walls)),
               enqueue_ms=float(np.median(enq)), isolated_ms=float(np.median(iso)),
               kernel_ms=float(np.median(tot)), n_kernels=len(per),
               kernels=sorted(((k, c, round(s_, 4)) for k, (c, s_) in names.items()),
                              key=lambda r: -r[2]))
    res["rows"].append(rec)
    print(f"{row} {mode}: wall {rec['wall_ms']:.3f} enqueue {rec['enqueue_ms']:.3f} "
          f"isolated {rec['isolated_ms']:.3f} kernel {rec['kernel_ms']:.3f} "
          f"n_kernels {rec['n_kernels']}", flush=True)
    dump()
    del compiled, built
