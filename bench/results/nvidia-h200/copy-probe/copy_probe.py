"""Why does the JAX copy floor (`y = x + 1` on a 512 MiB bf16 buffer, bench/floors.py)
read 2.8 TB/s on the H200 while torch's identical op reads 4.2 TB/s?

Times several elementwise formulations over the same bytes with the bench's own
protocol (bench/timing.py, wall) and with CUPTI (kernel time), and prints the XLA
kernel names. Bytes counted: one read and one write of the buffer.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/copy-probe/copy_probe.py OUT.json
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from bench.timing import Protocol, summarize, time_wall

NBYTES = int(__import__("os").environ.get("PROBE_BYTES", 1 << 29))  # the bench buffer: (1 << 30) // 4 bf16
rows = []
print(jax.__version__, jax.devices()[0], flush=True)
key = jax.random.key(0)
variants = {
    "bf16 x + 1 (floors.py)": (jnp.bfloat16, lambda x: x + 1),
    "bf16 x * 2": (jnp.bfloat16, lambda x: x * 2),
    "f32 x + 1": (jnp.float32, lambda x: x + 1),
    "uint32 x + 1": (jnp.uint32, lambda x: x + 1),
    "bf16 as uint32 x + 1": ("bf16-as-u32", None),
}
for name, (dtype, fn) in variants.items():
  if dtype == "bf16-as-u32":
    fn = lambda x: jax.lax.bitcast_convert_type(  # noqa: E731
        jax.lax.bitcast_convert_type(x, jnp.uint32) + 1, jnp.bfloat16)
    dtype, shape = jnp.bfloat16, (NBYTES // 4, 2)
  else:
    shape = (NBYTES // jnp.dtype(dtype).itemsize,)
  bufs = [(jax.random.bits(jax.random.fold_in(key, r), shape, jnp.uint16).view(jnp.bfloat16)
           if dtype == jnp.bfloat16 else
           jax.random.bits(jax.random.fold_in(key, r), shape, jnp.uint32).view(dtype),)
          for r in range(2)]
  bufs = [(jnp.where(jnp.isfinite(b[0]), b[0], 0) if dtype != jnp.uint32 else b[0],)
          for b in bufs]
  compiled = jax.jit(fn).lower(*bufs[0]).compile()
  wall = summarize(time_wall(compiled, bufs, jax.block_until_ready, Protocol()).samples_ms)
  per, kernel = [], float("nan")
  if jax.default_backend() == "gpu":  # CUPTI
    _, per = profiler.measure(compiled, aggregate=False)(*bufs[0])
    _, kern = profiler.measure(compiled, iterations=20)(*bufs[0])
    kernel = float(np.median(kern))
  row = dict(variant=name, wall_ms=round(wall["median"], 4), kernel_ms=round(kernel, 4),
             wall_gbps=round(2 * NBYTES / wall["median"] / 1e6),
             kernel_gbps=round(2 * NBYTES / kernel / 1e6) if per else None, kernels=[k for k, _ in per])
  rows.append(row)
  print(row, flush=True)
  del bufs, compiled
with open(sys.argv[1], "w") as f:
  json.dump(rows, f, indent=1)
