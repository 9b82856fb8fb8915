"""Variant 33: the training forward's up-projection as one kernel (`gmm_glu(...,
return_h=True)`, which writes h beside the GLU's output) against the two ops it replaces
(`gmm`, then `tile_glu` reading h back), and the GLU gradient kernel's blocks, on
gpt-oss-20b's dropless layout (E = 32, H = I = 2880, 3-5 row tiles per expert, 143 used
of 160). CUPTI kernel ms; every output against the two ops'. Run with
MOSAIC_GPU_DUMP_PTXAS=1 for ptxas's reports.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/train-fwd/probe.py OUT.json
"""
import sys

import numpy as np
import jax
import jax.numpy as jnp

from bench.gmm_probe import Log, cupti_ms, operands
from moe_jax import kernels
from moe_jax.kernels import BlockConfig

E, TILES, H, I = 32, 160, 2880, 2880
ACT = dict(activation="gpt_oss_glu")
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__)
x, w, b, group, fill = operands(E, H, 2 * I, TILES, seed=6)
keep = (jnp.arange(TILES * 128) % 128 < jnp.repeat(fill, 128))[:, None]
x = jnp.where(keep & jnp.repeat(group >= 0, 128)[:, None], x, 0).astype(x.dtype)

fused = jax.jit(lambda *a: kernels.gmm_glu(*a, implementation="pallas", return_h=True, **ACT))
infer = jax.jit(lambda *a: kernels.gmm_glu(*a, implementation="pallas", **ACT))


@jax.jit
def two_ops(x, w, b, group, fill):
  h = kernels.gmm(x, w, group, implementation="pallas")
  return kernels.tile_glu(h, b, group, fill, implementation="pallas", **ACT), h


args = (x, w, b, group, fill)
a1, h1 = fused(*args)
a2, h2 = two_ops(*args)
a0 = infer(*args)
same = dict(h_equal=bool(jnp.array_equal(h1, h2)), out_equal_two_ops=bool(jnp.array_equal(a1, a2)),
            out_equal_inference=bool(jnp.array_equal(a1, a0)),
            out_max_diff=float(jnp.max(jnp.abs(a1.astype(jnp.float32) - a2.astype(jnp.float32)))))
for name, f in (("gmm_glu return_h", fused), ("gmm + tile_glu", two_ops),
                ("gmm_glu (inference)", infer)):
  log(op=name, ms=cupti_ms(f, args), **same)

# tile_glu_grad's blocks (NOTES variant 19 swept 6 of 32 x 64 and up; these go smaller).
g = jax.random.normal(jax.random.key(9), (TILES * 128, I), jnp.bfloat16)
ref = None
for br, bi, warps in ((32, 64, 4), (16, 64, 4), (32, 32, 4), (32, 64, 2), (16, 128, 4),
                      (16, 64, 2), (8, 128, 4), (32, 128, 8)):
  cfg = BlockConfig(block_rows=br, block_h=bi, num_warps=warps, num_stages=1)
  f = jax.jit(lambda h, b, g, t, f, cfg=cfg: kernels.tile_glu_grad(
      h, b, g, t, f, implementation="pallas", config=cfg, **ACT))
  out = f(h2, b, g, group, fill)
  ref = out if ref is None else ref
  log(op="tile_glu_grad", block=[br, bi, warps], ms=cupti_ms(f, (h2, b, g, group, fill)),
      equal_to_first=bool(jnp.array_equal(out[0], ref[0])),
      sums_max_diff=float(jnp.max(jnp.abs(out[1] - ref[1]))))
