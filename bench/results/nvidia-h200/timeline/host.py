"""Host time of one JAX call as moe-bench makes it (routing-bench pack, pallas/binned
fwd, and the gpt-oss-20b pallas/binned forward): medians over 50 calls, ms.
  enqueue_aot   the AOT-compiled call (moe-bench's) returning, without a sync;
  enqueue_jit   the same function through jax.jit's cache;
  b2b           20 back-to-back AOT calls, one sync, per call (moe-bench's wall);
  trivial       enqueue of a jitted x + 1 on 4 floats (the dispatch floor).
Each XLA_FLAGS setting runs in its own process.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/timeline/host.py OUT.json
"""
import json
import os
import subprocess
import sys
import time

FLAGS = {"default": "", "command buffers off": "--xla_gpu_enable_command_buffer="}
ROWS = [("routing-bench", "pack", "pallas/binned", "fwd"),
        ("gpt-oss-20b", "layer", "pallas/binned", "fwd")]


def child(name, out_path):
  import numpy as np
  import jax
  import jax.numpy as jnp
  from bench import configs
  from bench.plan import CaseSpec
  from bench.runners_jax import JaxRunner
  from bench.timing import Protocol

  def enqueue(f, args_of, n=50):
    ts = []
    for i in range(n):
      a = args_of(i)
      t0 = time.perf_counter()
      o = f(*a)
      ts.append(time.perf_counter() - t0)
      jax.block_until_ready(o)
      del o
    return round(float(np.median(ts)) * 1e3, 4)

  tiny = jax.jit(lambda x: x + 1)
  x4 = jnp.ones(4)
  jax.block_until_ready(tiny(x4))
  rows = []
  for config, component, impl, mode in ROWS:
    runner = JaxRunner(configs.select(config)[0], Protocol())
    case = CaseSpec(config=config, component=component, mode=mode, framework="jax", impl=impl,
                    variant=impl.split("/")[1])
    built = runner.build(case)
    compiled, _, _ = runner.prepare(built)
    jitted = jax.jit(built.fn)
    args, n = built.inputs, len(built.inputs)
    for f in (compiled, jitted):
      for i in range(3):
        jax.block_until_ready(f(*args[i % n]))
    b2b = []
    for _ in range(10):
      t0 = time.perf_counter()
      o = None
      for i in range(20):
        o = None
        o = compiled(*args[i % n])
      jax.block_until_ready(o)
      b2b.append((time.perf_counter() - t0) / 20)
    o = None
    row = dict(flags=name, config=config, component=component, impl=impl, mode=mode,
               enqueue_aot=enqueue(compiled, lambda i: args[i % n]),
               enqueue_jit=enqueue(jitted, lambda i: args[i % n]),
               b2b=round(float(np.median(b2b)) * 1e3, 4), trivial=enqueue(tiny, lambda i: (x4,)))
    print(row, flush=True)
    rows.append(row)
    with open(out_path, "w") as f:
      json.dump(rows, f)
    del compiled, jitted, built, runner


def main():
  if len(sys.argv) == 4 and sys.argv[1] == "--child":
    return child(sys.argv[2], sys.argv[3])
  out, rows = sys.argv[1], []
  for name, flags in FLAGS.items():
    part = f"{out}.{len(rows)}.part"
    subprocess.run([sys.executable, __file__, "--child", name, part],
                   env=dict(os.environ, XLA_FLAGS=flags), check=False)
    rows += json.load(open(part)) if os.path.exists(part) else [dict(flags=name, error="died")]
    with open(out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
