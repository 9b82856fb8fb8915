"""Variant 32: the ping-pong tgmm (`grouped_matmul_pingpong.tgmm`) against the
cooperative one, on the two weight gradients dW_up = x.T @ dh ([R, H] x [R, 2I]) and
dW_down = a.T @ dy ([R, I] x [R, H]) of gpt-oss-20b (E = 32, H = I = 2880, 3-5 row
tiles per expert) or sonic-medium (E = 64, H = 4096, I = 14336, 8 full tiles and a
partial one per expert), bf16 out, rows past each tile's fill zero (the layout's
contract). CUPTI kernel ms; outputs against the cooperative kernel's. Run with
MOSAIC_GPU_DUMP_PTXAS=1 for ptxas's reports (in the order of the "=== compile" lines).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/tgmm-pingpong/probe.py OUT.json [gpt-oss-20b|sonic-medium]
"""
import sys

import numpy as np
import jax
import jax.numpy as jnp

from bench.gmm_probe import Log, cupti_ms, layout
from moe_jax import _compat
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as coop
from moe_jax.kernels import grouped_matmul_pingpong as pp

SMS = _compat.num_sms()
CONFIG = sys.argv[2] if len(sys.argv) > 2 else "gpt-oss-20b"
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__, config=CONFIG)
if CONFIG == "gpt-oss-20b":
  E, TILES, H, I = 32, 160, 2880, 2880
  group, fill = layout(E, TILES, seed=6)
else:  # sonic-medium: 1024 slots per expert on average
  E, H, I = 64, 4096, 14336
  last = np.random.default_rng(6).integers(1, 129, E)
  group = jnp.asarray(np.repeat(np.arange(E), 9), jnp.int32)
  fill = jnp.asarray(np.concatenate([np.full((E, 8), 128), last[:, None]], 1).reshape(-1), jnp.int32)
  TILES = E * 9
row_fill = jnp.repeat(fill, 128)
rows = jnp.arange(TILES * 128) % 128
keep = (rows < row_fill)[:, None]


def rows_of(n, seed):
  x = jax.random.normal(jax.random.key(seed), (TILES * 128, n), jnp.bfloat16)
  return jnp.where(keep, x, 0).astype(jnp.bfloat16)


SHAPES = {"dW_up": (rows_of(H, 1), rows_of(2 * I, 2)),
          "dW_down": (rows_of(I, 3), rows_of(H, 4))}
VARIANTS = {
    "coop 128x256/3": ("cooperative", 128, 256, 3),
    "pp 128x192/4": ("pingpong", 128, 192, 4),
} if CONFIG != "gpt-oss-20b" else {
    "coop 128x256/3": ("cooperative", 128, 256, 3),
    "pp 192x128/4": ("pingpong", 192, 128, 4),
    "pp 192x128/3": ("pingpong", 192, 128, 3),
    "pp 128x192/4": ("pingpong", 128, 192, 4),
    "pp 128x192/3": ("pingpong", 128, 192, 3),
    "pp 128x128/5": ("pingpong", 128, 128, 5),
}


def fn(schedule, bk, bn, stages):
  c = MatmulConfig(block_n=bn, block_k=bk, num_stages=stages, backend="mosaic", schedule=schedule)
  mod = coop if schedule == "cooperative" else pp
  return jax.jit(lambda a, b, g, f: mod.tgmm(a, b, g, f, num_groups=E, out_dtype=jnp.bfloat16,
                                             config=c, num_sms=SMS))


max_diff = jax.jit(lambda a, b: jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
used_rows = int(jnp.sum(jnp.where(group >= 0, fill, 0)))
for shape, (a, b) in SHAPES.items():
  args = (a, b, group, fill)
  compiled = {}
  for v, spec in VARIANTS.items():
    print(f"=== compile {shape} {v}", flush=True)
    compiled[v] = fn(*spec).lower(*args).compile()
  want = compiled["coop 128x256/3"](*args)  # compared on the device (15 GB at sonic-medium)
  for v, c in compiled.items():
    got = c(*args)
    log(check=v, shape=shape, equal=bool(jax.jit(jnp.array_equal)(got, want)),
        max_abs_diff=float(max_diff(got, want)))
    del got
  times = {v: [] for v in compiled}
  for _ in range(2):
    for v, c in compiled.items():
      # profiler.measure keeps each iteration's output: 14 GB apiece at sonic-medium.
      times[v] += cupti_ms(c, args, iterations=10 if CONFIG == "gpt-oss-20b" else 2)
  flops = 2 * used_rows * a.shape[1] * b.shape[1]
  for v, ts in times.items():
    ms = float(np.median(ts))
    log(op=v, shape=shape, ms=round(ms, 4), ms_all=[round(t, 4) for t in ts],
        useful_tflops=round(flops / ms / 1e9, 1))
