"""Variant 37: `tile_glu_grad` with one program per (tile, column block) looping over the
tile's row blocks (column sums kept in registers, loads pipelined by Triton's stages),
against the kernel of one program per (row block, column block) whose per-block sums
XLA then reduced. CUPTI ms (kernel and the sums' reduction) of blocks and stages on
gpt-oss-20b's synthetic dropless layout; run against either tree (PYTHONPATH).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/glu-loop/probe.py OUT.json
"""
import sys

import jax
import jax.numpy as jnp

from bench.gmm_probe import Log, cupti_ms, glu_backward_operands
from moe_jax import kernels
from moe_jax.kernels import BlockConfig

E, TILES, H, I = 32, 160, 2880, 2880
ACT = dict(activation="gpt_oss_glu")
CONFIGS = [(32, 64, 4, 1), (32, 64, 4, 2), (32, 64, 4, 3), (16, 64, 4, 2), (64, 64, 8, 2)]
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__)
h, b, group, fill, _, _ = glu_backward_operands(E, TILES, H, I)
g = jax.random.normal(jax.random.key(11), (TILES * 128, I), jnp.bfloat16)
args = (h, b, g, group, fill)
ref = jax.jit(lambda *a: kernels.tile_glu_grad(*a, implementation="xla", **ACT))(*args)
for br, bi, warps, stages in CONFIGS:
  cfg = BlockConfig(block_rows=br, block_h=bi, num_warps=warps, num_stages=stages)
  f = jax.jit(lambda *a, cfg=cfg: kernels.tile_glu_grad(*a, implementation="pallas", config=cfg,
                                                         **ACT))
  try:
    dh, sums = f(*args)
    diff = dict(dh_differing=int(jnp.sum(dh != ref[0])),
                sums_max_rel=float(jnp.max(jnp.abs(sums - ref[1]) / (jnp.abs(ref[1]) + 1))))
    log(block=[br, bi, warps, stages], ms=cupti_ms(f, args), **diff)
  except Exception as e:  # pylint: disable=broad-except
    log(block=[br, bi, warps, stages], error=str(e)[:300])
