"""Does moe-bench's AOT `Compiled` call take JAX's C++ fast path, and does it enqueue
slower than the same function through `jax.jit`? The gpt-oss-20b pallas/binned forward
as moe-bench builds it: the call object's type, host enqueue medians (50 synced calls,
AOT and jit alternating twice), a cProfile of 20 synced AOT calls.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/timeline/aot_probe.py
"""
import inspect, time, sys
import numpy as np, jax
from jax._src import stages
src = inspect.getsource(stages.Compiled.__call__); print(src[:1500])
from bench import configs
from bench.plan import CaseSpec
from bench.runners_jax import JaxRunner
from bench.timing import Protocol
runner = JaxRunner(configs.select("gpt-oss-20b")[0], Protocol())
case = CaseSpec(config="gpt-oss-20b", component="layer", mode="fwd", framework="jax", impl="pallas/binned", variant="binned")
built = runner.build(case)
compiled, _, _ = runner.prepare(built)
args = built.inputs[0]
out = compiled(*args); jax.block_until_ready(out)
print("call type:", type(compiled._call), getattr(compiled, "_call", None))
ex = compiled._executable
print("cpp call:", ex.create_cpp_call(compiled._params) if hasattr(ex, "create_cpp_call") else "n/a")
jf = jax.jit(built.fn); jax.block_until_ready(jf(*args))
def enq(f, n=50):
  ts = []
  for i in range(n):
    jax.block_until_ready(out)
    t0 = time.perf_counter(); o = f(*args); ts.append(time.perf_counter() - t0); jax.block_until_ready(o)
  return float(np.median(ts)) * 1e3
for name, f in (("aot", compiled), ("jit", jf), ("aot", compiled), ("jit", jf)):
  print(name, "enqueue ms", round(enq(f), 4))
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for i in range(20):
  o = compiled(*args); jax.block_until_ready(o)
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(12)
