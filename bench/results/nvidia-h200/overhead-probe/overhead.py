"""Where the gpt-oss-20b layer's wall time above its kernel time goes (JAX).

For each XLA_FLAGS setting (one child process each, since XLA reads the flags once),
the layer rows xla/binned and pallas/dropless, fwd and fwd+bwd, as moe-bench builds
them (AOT-compiled, rotated inputs):
  enqueue_ms  host time of one call without waiting (the GPU idle before it);
  synced_ms   one call and its sync (moe-bench's wall when a call is >= 2 ms);
  b2b_ms      20 back-to-back calls, one sync, per call;
  kernel_ms   CUPTI sum of the call's kernels; n_kernels per call.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/overhead-probe/overhead.py OUT.json
"""
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "default": "",
    "command buffers off": "--xla_gpu_enable_command_buffer=",
    "command buffers + custom calls":
        "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN",
}


def child(flags_name, out_path):
  import jax
  import numpy as np
  from jax.experimental.mosaic.gpu import profiler

  from bench import configs
  from bench.plan import CaseSpec
  from bench.runners_jax import JaxRunner
  from bench.timing import Protocol

  rows = []
  cfg = configs.select("gpt-oss-20b")[0]
  runner = JaxRunner(cfg, Protocol())
  for impl in ("xla/binned", "pallas/dropless"):
    for mode in ("fwd", "fwd+bwd"):
      case = CaseSpec(config="gpt-oss-20b", component="layer", mode=mode, framework="jax",
                      impl=impl, variant=impl.split("/")[1])
      built = runner.build(case)
      compiled, _, _ = runner.prepare(built)
      args = built.inputs
      n = len(args)
      for i in range(5):
        jax.block_until_ready(compiled(*args[i % n]))
      enq, syn = [], []
      for i in range(20):
        t0 = time.perf_counter()
        o = compiled(*args[i % n])
        t1 = time.perf_counter()
        jax.block_until_ready(o)
        t2 = time.perf_counter()
        enq.append((t1 - t0) * 1e3)
        syn.append((t2 - t0) * 1e3)
        del o
      b2b = []
      for _ in range(5):
        t0 = time.perf_counter()
        for i in range(20):
          o = None
          o = compiled(*args[i % n])
        jax.block_until_ready(o)
        b2b.append((time.perf_counter() - t0) / 20 * 1e3)
      del o
      _, times = profiler.measure(compiled, iterations=10)(*args[0])
      _, per = profiler.measure(compiled, aggregate=False)(*args[0])
      row = dict(flags=flags_name, impl=impl, mode=mode,
                 enqueue_ms=round(float(np.median(enq)), 4),
                 synced_ms=round(float(np.median(syn)), 4),
                 b2b_ms=round(float(np.median(b2b)), 4),
                 kernel_ms=round(float(np.median(times)), 4), n_kernels=len(per))
      print(row, flush=True)
      rows.append(row)
      with open(out_path, "w") as f:
        json.dump(rows, f)
      del compiled, built


def main():
  if len(sys.argv) == 4 and sys.argv[1] == "--child":
    return child(sys.argv[2], sys.argv[3])
  out, rows = sys.argv[1], []
  for name, flags in VARIANTS.items():
    part = out + "." + str(len(rows)) + ".part"
    env = dict(os.environ, XLA_FLAGS=flags)
    r = subprocess.run([sys.executable, __file__, "--child", name, part], env=env, check=False)
    got = json.load(open(part)) if os.path.exists(part) else []
    rows += got or [dict(flags=name, error=f"child exited {r.returncode}")]
    with open(out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
