"""Synced-call latency without a profiler: the layer's forward+backward against a
program of one long kernel.

Per case, medians over CALLS synced calls (host perf_counter, ms):
  enqueue  the call returning;
  wall     the call plus block_until_ready of its whole output;
  first    block_until_ready of the first output leaf only, then
  rest     the other leaves' (0 if they all finish together);
  again    block_until_ready of an output that is already done;
and the CUPTI kernel time of one call (`profiler.measure`). `excess` = wall - kernel.
Cases: gpt-oss-20b pallas/dropless fwd+bwd and pallas/binned fwd (as moe-bench builds
them), and `chain`: one jitted [8192, 8192] bf16 matmul repeated three times (three
kernels, ~4.5 ms, one output).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/timeline/sync_probe.py OUT.json
"""
import json
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp
from jax.experimental.mosaic.gpu import profiler

from bench.gmm_probe import bench_case

CALLS = 30


def measure(fn, args_of, n_inputs):
  out = None
  for i in range(5):
    out = None
    out = fn(*args_of(i % n_inputs))
    jax.block_until_ready(out)
  rows = {k: [] for k in ("enqueue", "wall", "first", "rest", "again")}
  for i in range(CALLS):
    out = None
    a = args_of(i % n_inputs)
    t0 = time.perf_counter()
    out = fn(*a)
    t1 = time.perf_counter()
    jax.block_until_ready(out)
    t2 = time.perf_counter()
    jax.block_until_ready(out)
    t3 = time.perf_counter()
    rows["enqueue"].append(t1 - t0)
    rows["wall"].append(t2 - t0)
    rows["again"].append(t3 - t2)
    out = None
    out = fn(*a)
    leaves = jax.tree.leaves(out)
    t4 = time.perf_counter()
    leaves[0].block_until_ready()
    t5 = time.perf_counter()
    jax.block_until_ready(leaves[1:])
    t6 = time.perf_counter()
    rows["first"].append(t5 - t4)
    rows["rest"].append(t6 - t5)
  med = {k: round(float(np.median(v)) * 1e3, 4) for k, v in rows.items()}
  _, kernel = profiler.measure(fn, iterations=10)(*args_of(0))
  med["kernel"] = round(float(np.median(kernel)), 4)
  med["excess"] = round(med["wall"] - med["kernel"], 4)
  med["leaves"] = len(jax.tree.leaves(out))
  return med


def main(out_path):
  report = []

  def log(**row):
    print(json.dumps(row), flush=True)
    report.append(row)
    with open(out_path, "w") as f:
      json.dump(report, f, indent=1)

  a = jnp.ones((8192, 8192), jnp.bfloat16) * 0.01
  chain = jax.jit(lambda x: ((x @ x) @ x) @ x)
  log(case="chain", **measure(chain, lambda i: (a,), 1))
  for config, impl, mode in (("gpt-oss-20b", "pallas/dropless", "fwd+bwd"),
                             ("gpt-oss-20b", "pallas/binned", "fwd")):
    compiled, args = bench_case(config, impl, mode, warm=0)
    log(case=f"{config} {impl} {mode}", **measure(compiled, lambda i: args[i], len(args)))
    del compiled, args


if __name__ == "__main__":
  main(sys.argv[1])
