"""Kernel times of the tile layout's bias + GLU, forward and gradient: XLA's fusions
against the Pallas kernels (`moe_jax.kernels.tile_glu(_grad)`) under a few blocks.

gpt-oss-20b's shapes (2I = 5760, tiles of 128 rows, 160 static tiles, E = 32) in two
layouts: the grouped binned one at capacity factor 1.25 (116 used tiles, measured on
the layer) and the dropless one (143 used tiles). With `sonic-medium`: 2I = 28672,
E = 64, 576 static tiles, of which the dropless layout uses 544 (512 full, one half
tile per expert) and the binned one ~300 (47% of the slots drop), the default block
only. Each time is the median over 20 calls of the per-call CUPTI kernel sum (ms).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/glu-sweep/glu.py OUT.json [sonic-medium]
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import BlockConfig, tile_glu, tile_glu_grad

TM = 128
# name: (2I, static tiles, E, ((layout, used tiles), ...), all blocks?)
SHAPES = {"gpt-oss-20b": (5760, 160, 32, (("binned", 116), ("dropless", 143)), True),
          "sonic-medium": (28672, 576, 64, (("binned", 300), ("dropless", 544)), False)}
CONFIGS = [BlockConfig(block_rows=128, block_h=32, num_warps=4),  # the first default
           BlockConfig(block_rows=64, block_h=64, num_warps=4),
           BlockConfig(block_rows=32, block_h=64, num_warps=4),
           BlockConfig(block_rows=32, block_h=128, num_warps=4),
           BlockConfig(block_rows=64, block_h=128, num_warps=8),
           BlockConfig(block_rows=128, block_h=64, num_warps=8)]


def layout(num_tiles, used, num_experts):
  """tile_expert: `used` tiles spread over E experts in order, then unused (-1)."""
  te = np.full(num_tiles, -1, np.int32)
  te[:used] = np.sort(np.arange(used) % num_experts)
  fill = np.where(te >= 0, TM, 0).astype(np.int32)
  last = np.r_[te[1:] != te[:-1], True] & (te >= 0)
  fill[last] = 64  # each expert's last tile half full
  return jnp.asarray(te), jnp.asarray(fill)


def median_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  _, t = profiler.measure(fn, iterations=20)(*args)
  return float(np.median(t))


def main(out_path, shape="gpt-oss-20b"):
  two_i, num_tiles, num_experts, layouts, sweep = SHAPES[shape]
  key = jax.random.key(0)
  h = jax.random.normal(key, (num_tiles * TM, two_i), jnp.bfloat16) * 3
  g = jax.random.normal(key, (num_tiles * TM, two_i // 2), jnp.bfloat16)
  bias = jax.random.normal(key, (num_experts, two_i), jnp.bfloat16)
  rows = []
  for name, used in layouts:
    te, fill = layout(num_tiles, used, num_experts)
    for impl, config in [("xla", None)] + [("pallas", c) for c in (CONFIGS if sweep else [None])]:
      kw = dict(activation="gpt_oss_glu", implementation=impl, config=config)
      fwd = jax.jit(lambda h, b, te, f, kw=kw: tile_glu(h, b, te, f, **kw))
      bwd = jax.jit(lambda h, b, g, te, f, kw=kw: tile_glu_grad(h, b, g, te, f, **kw))
      row = dict(shape=shape, layout=name, used_tiles=used, impl=impl, config=str(config),
                 fwd_ms=median_ms(fwd, h, bias, te, fill),
                 grad_ms=median_ms(bwd, h, bias, g, te, fill))
      print(row, flush=True)
      rows.append(row)
      with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main(*sys.argv[1:])
