"""Where the grouped layout's time goes at sonic-large's slots (M = 131072, E = 256):
per-kernel CUPTI ms of the "xla" layout and of `kernels.grouped_layout` (its scanned
path: histogram, XLA prefix, layout kernel) under several blocks, and `expert_ranks`
(the padded layout's sort) both ways.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/dispatch-large/blocks.py OUT.json
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import BlockConfig, expert_ranks, grouped_layout, layout, ranks

M, E, CAP, TILE_ROWS = 131072, 256, 640, 128


def kernels_ms(fn, *args):
  """(total ms, [(kernel, ms)]) of one call, the median of 20."""
  jax.block_until_ready(fn(*args))
  calls = [profiler.measure(fn, aggregate=False)(*args)[1] for _ in range(20)]
  names = [n for n, _ in calls[0]]
  calls = [c for c in calls if [n for n, _ in c] == names]
  times = np.median(np.array([[t for _, t in c] for c in calls]), axis=0)
  return float(times.sum()), [(n[:60], round(float(t), 4)) for n, t in zip(names, times)]


def main(out_path):
  ids = jnp.asarray(np.random.default_rng(0).integers(0, E, M), jnp.int32)
  num_tiles = layout.max_tiles(M, E, CAP, TILE_ROWS)
  rows = []

  def record(**row):
    rows.append(row)
    print(row, flush=True)
    json.dump(rows, open(out_path, "w"), indent=1)

  xla = jax.jit(lambda i: grouped_layout(i, E, capacity=CAP, tile_rows=TILE_ROWS,
                                         num_tiles=num_tiles, implementation="xla"))
  want = jax.tree.leaves(xla(ids))
  total, ks = kernels_ms(xla, ids)
  record(op="grouped_layout", impl="xla", ms=total, kernels=ks)
  for bs in (32, 64, 128):
    for warps in (4, 8):
      config = BlockConfig(block_rows=bs, block_h=ranks.experts_p2(E), num_warps=warps,
                           num_stages=1)
      fn = jax.jit(lambda i, c=config: grouped_layout(
          i, E, capacity=CAP, tile_rows=TILE_ROWS, num_tiles=num_tiles,
          implementation="pallas", config=c))
      ok = all(bool((g == w).all()) for g, w in zip(jax.tree.leaves(fn(ids)), want))
      total, ks = kernels_ms(fn, ids)
      record(op="grouped_layout", impl="pallas", block_rows=bs, num_warps=warps,
             default=config == ranks.default_ranks_config(E), ms=total, kernels=ks,
             matches_xla=ok)
  for impl in ("xla", "pallas"):
    fn = jax.jit(lambda i, impl=impl: expert_ranks(i, E, implementation=impl))
    total, ks = kernels_ms(fn, ids)
    record(op="expert_ranks", impl=impl, ms=total, kernels=ks)


if __name__ == "__main__":
  main(sys.argv[1])
