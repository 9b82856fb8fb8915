"""Kernel times of the tile layout's bias + GLU, forward and gradient: XLA's fusions
against the Pallas kernels (`moe_jax.kernels.tile_glu(_grad)`) under a few blocks.

gpt-oss-20b's shapes (2I = 5760, tiles of 128 rows, 160 static tiles, E = 32) in two
layouts: the grouped binned one at capacity factor 1.25 (116 used tiles, measured on
the layer) and the dropless one (143 used tiles). Each time is the median over 20
calls of the per-call CUPTI kernel sum (ms).

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/glu-sweep/glu.py OUT.json
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import BlockConfig, tile_glu, tile_glu_grad

TM, TWO_I, NUM_TILES, E = 128, 5760, 160, 32
CONFIGS = [BlockConfig(block_rows=128, block_h=32, num_warps=4),  # the first default
           BlockConfig(block_rows=64, block_h=64, num_warps=4),
           BlockConfig(block_rows=32, block_h=64, num_warps=4),
           BlockConfig(block_rows=32, block_h=128, num_warps=4),
           BlockConfig(block_rows=64, block_h=128, num_warps=8),
           BlockConfig(block_rows=128, block_h=64, num_warps=8)]


def layout(used):
  """tile_expert: `used` tiles spread over E experts in order, then unused (-1)."""
  te = np.full(NUM_TILES, -1, np.int32)
  te[:used] = np.sort(np.arange(used) % E)
  fill = np.where(te >= 0, TM, 0).astype(np.int32)
  last = np.r_[te[1:] != te[:-1], True] & (te >= 0)
  fill[last] = 64  # each expert's last tile half full
  return jnp.asarray(te), jnp.asarray(fill)


def median_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  _, t = profiler.measure(fn, iterations=20)(*args)
  return float(np.median(t))


def main(out_path):
  key = jax.random.key(0)
  h = jax.random.normal(key, (NUM_TILES * TM, TWO_I), jnp.bfloat16) * 3
  g = jax.random.normal(key, (NUM_TILES * TM, TWO_I // 2), jnp.bfloat16)
  bias = jax.random.normal(key, (E, TWO_I), jnp.bfloat16)
  rows = []
  for name, used in (("binned", 116), ("dropless", 143)):
    te, fill = layout(used)
    for impl, config in [("xla", None)] + [("pallas", c) for c in CONFIGS]:
      kw = dict(activation="gpt_oss_glu", implementation=impl, config=config)
      fwd = jax.jit(lambda h, b, te, f, kw=kw: tile_glu(h, b, te, f, **kw))
      bwd = jax.jit(lambda h, b, g, te, f, kw=kw: tile_glu_grad(h, b, g, te, f, **kw))
      row = dict(layout=name, used_tiles=used, impl=impl, config=str(config),
                 fwd_ms=median_ms(fwd, h, bias, te, fill),
                 grad_ms=median_ms(bwd, h, bias, g, te, fill))
      print(row, flush=True)
      rows.append(row)
      with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
