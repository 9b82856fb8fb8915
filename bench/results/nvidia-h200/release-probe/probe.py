"""Does releasing the previous output make back-to-back calls wait? gpt-oss-20b layer
rows as moe-bench builds them, both frameworks in one process, each call pattern timed
over N back-to-back calls and one sync (median of REPEATS, ms per call), with the host's
time to enqueue the N calls (before the sync) beside it:
- "release": the protocol's `out = None` before each call (the old output is freed
  before the next call is enqueued);
- "keep1": `out = fn(...)`, the old output freed after the next call is enqueued;
- "keepall": every output of the N calls kept until the sync.
Kernel time from the runners' own CUPTI method (as moe-bench).

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 bench/results/nvidia-h200/release-probe/probe.py OUT.json
"""
import json
import sys
import time

import numpy as np

ROWS = (("jax", "pallas/dropless", "fwd+bwd", "dropless"), ("jax", "pallas/binned", "fwd+bwd", "binned"),
        ("jax", "pallas/dropless", "fwd", "dropless"), ("jax", "pallas/binned", "fwd", "binned"),
        ("torch", "grouped+compile", "fwd+bwd", "dropless"), ("torch", "grouped+compile", "fwd", "dropless"))
N, REPEATS = 12, 7


def pattern(fn, inputs, sync, how):
  outs, out = [], None
  t0 = time.perf_counter()
  for i in range(N):
    if how == "release":
      out = None
      out = fn(*inputs[i % len(inputs)])
    elif how == "keep1":
      out = fn(*inputs[i % len(inputs)])
    else:
      outs.append(fn(*inputs[i % len(inputs)]))
      out = outs[-1]
  t1 = time.perf_counter()
  sync(out)
  t2 = time.perf_counter()
  return (t2 - t0) * 1e3 / N, (t1 - t0) * 1e3 / N


def main(out_path):
  from bench.gmm_probe import framework_case
  name = sys.argv[2] if len(sys.argv) > 2 else "gpt-oss-20b"
  runners = {}
  report = []
  for framework, impl, mode, variant in ROWS:
    runner, built, fn = framework_case(name, framework, impl, mode, variant=variant, warm=3,
                                       runners=runners)
    row = dict(framework=framework, impl=impl, mode=mode)
    for how in ("release", "keep1", "keepall", "release", "keep1"):
      per, host = zip(*[pattern(fn, built.inputs, runner.sync, how) for _ in range(REPEATS)])
      row.setdefault(how, []).append(dict(ms=float(np.median(per)), host_ms=float(np.median(host))))
    kernel, method = runner.kernel_times(fn, built, 20)
    row["kernel_ms"] = float(np.median(kernel)) if kernel else None
    print(row, flush=True)
    report.append(row)
    del built, fn
  json.dump(report, open(out_path, "w"), indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
