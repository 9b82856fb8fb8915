"""The prefix launch of variant 41 (`ranks.block_prefix`): `expert_ranks` and
`grouped_layout` at gpt-oss-20b's slots (M = 16384, E = 32), sonic-medium's (65536, 64),
routing-bench's (32768, 128) and sonic-large's (131072, 256). CUPTI kernel ms per call
(every launch of the op) with the histogram rows summed in the rank launch (scan_above
large), read from the prefix launch (scan_above = 0), read from an XLA cumsum (the
scanned path before variant 41), and the default; and whether every output matches the
"xla" argsort implementation.

It needs the tried Pallas prefix launch (`ranks.block_prefix`), which did not land:
revert `variant41.patch`, apply `prefix-kernel.patch`, then

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/block-prefix/probe.py OUT.json
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import expert_ranks, grouped_layout, layout, ranks

SHAPES = (("gpt-oss-20b", 16384, 32, 640), ("sonic-medium", 65536, 64, 1280),
          ("routing-bench", 32768, 128, 320), ("sonic-large", 131072, 256, 640))
TILE_ROWS = 128
PREFIX = ranks.block_prefix


def xla_prefix(hist, config, interpret):
  """The scanned path as it was before variant 41: one XLA cumsum over the blocks."""
  del interpret
  rows = hist.reshape(-1, config.block_h)
  inclusive = jnp.cumsum(rows, axis=0, dtype=jnp.int32)
  return jnp.concatenate([inclusive - rows, inclusive[-1:]]).reshape(-1)


def kernel_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  _, t = profiler.measure(fn, iterations=50)(*args)
  return float(np.median(t))


def ops(e, cap, num_tiles, config, above):
  rank = jax.jit(lambda i: ranks.expert_ranks(i, num_experts=e, config=config,
                                              interpret=False, scan_above=above))
  lay = jax.jit(lambda i: layout.grouped_layout(
      i, num_experts=e, capacity=cap, tile_rows=TILE_ROWS, num_tiles=num_tiles,
      config=config, interpret=False, scan_above=above))
  return dict(expert_ranks=rank, grouped_layout=lay)


def main(out_path):
  rows = []
  for name, m, e, cap in SHAPES:
    ids = jnp.asarray(np.random.default_rng(0).integers(0, e, m), jnp.int32)
    num_tiles = layout.max_tiles(m, e, cap, TILE_ROWS)
    config = ranks.default_ranks_config(e)
    blocks = -(-m // config.block_rows)
    xla = dict(
        expert_ranks=jax.jit(lambda i, e=e: expert_ranks(i, e, implementation="xla")),
        grouped_layout=jax.jit(lambda i, e=e, c=cap, n=num_tiles: grouped_layout(
            i, e, capacity=c, tile_rows=TILE_ROWS, num_tiles=n, implementation="xla")))
    for op, fn in xla.items():
      rows.append(dict(shape=name, m=m, e=e, op=op, path="xla argsort", ms=kernel_ms(fn, ids)))
      print(rows[-1], flush=True)
    want = {op: jax.tree.leaves(fn(ids)) for op, fn in xla.items()}
    for label, above, prefix in (("in-kernel sum", 1 << 62, PREFIX), ("prefix launch", 0, PREFIX),
                                 ("xla cumsum", 0, xla_prefix),
                                 ("default", ranks.SCAN_ABOVE, PREFIX)):
      ranks.block_prefix = prefix
      for op, fn in ops(e, cap, num_tiles, config, above).items():
        got = jax.tree.leaves(fn(ids))
        ok = all(bool((g == w).all()) for g, w in zip(got, want[op]))
        rows.append(dict(shape=name, m=m, e=e, op=op, path=label, blocks=blocks,
                         entries=blocks * ranks.experts_p2(e), ms=kernel_ms(fn, ids),
                         matches_xla=ok))
        print(rows[-1], flush=True)
      ranks.block_prefix = PREFIX
  json.dump(rows, open(out_path, "w"), indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
