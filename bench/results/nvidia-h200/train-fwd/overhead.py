"""Where the JAX layer's synced wall time above its kernel time goes (gpt-oss-20b).

moe-bench times a call of >= 2 ms as one call and its sync, after releasing the
previous call's output inside the timed region (`bench/timing.py`). Per row, medians
over 20 calls, ms:
  bench      the bench's sample: release the previous output, call, sync;
  synced     the same with the release done before the clock starts;
  release    the release alone (the previous output, already synced);
  enqueue    the call's return on the host, without a sync;
  kernel     CUPTI sum of the call's kernels.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/train-fwd/overhead.py OUT.json
"""
import json
import sys
import time

import numpy as np
import jax
from jax.experimental.mosaic.gpu import profiler

from bench import configs
from bench.plan import CaseSpec
from bench.runners_jax import JaxRunner
from bench.timing import Protocol

rows = []
runner = JaxRunner(configs.select("gpt-oss-20b")[0], Protocol())
for impl, mode in (("pallas/dropless", "fwd+bwd"), ("pallas/binned", "fwd+bwd"),
                   ("pallas/binned", "fwd")):
  case = CaseSpec(config="gpt-oss-20b", component="layer", mode=mode, framework="jax",
                  impl=impl, variant=impl.split("/")[1])
  built = runner.build(case)
  compiled, _, _ = runner.prepare(built)
  args, n = built.inputs, len(built.inputs)
  out = None
  for i in range(5):
    out = None
    out = compiled(*args[i % n])
    jax.block_until_ready(out)
  bench, synced, release, enqueue = [], [], [], []
  for i in range(20):
    t0 = time.perf_counter()
    out = None
    out = compiled(*args[i % n])
    jax.block_until_ready(out)
    bench.append(time.perf_counter() - t0)
  for i in range(20):
    t0 = time.perf_counter()
    out = None
    t1 = time.perf_counter()
    out = compiled(*args[i % n])
    t2 = time.perf_counter()
    jax.block_until_ready(out)
    t3 = time.perf_counter()
    release.append(t1 - t0)
    enqueue.append(t2 - t1)
    synced.append(t3 - t1)
  out = None
  _, times = profiler.measure(compiled, iterations=10)(*args[0])
  row = dict(impl=impl, mode=mode, **{k: round(float(np.median(v)) * 1e3, 4) for k, v in (
      ("bench", bench), ("synced", synced), ("release", release), ("enqueue", enqueue))},
             kernel=round(float(np.median(times)), 4))
  print(row, flush=True)
  rows.append(row)
  with open(sys.argv[1], "w") as f:
    json.dump(rows, f, indent=1)
  del compiled, built
