"""The grouped layout (`kernels.grouped_layout`, NOTES variant 24) at gpt-oss-20b's slots
(M = 16384, E = 32), routing-bench's (M = 32768, E = 128) and sonic-large's (M = 131072,
E = 256; NOTES Next 8): CUPTI kernel ms per call against the "xla" argsort layout, with
the rank launch's histogram prefix summed in the kernel (scan_above large) and read from
an XLA prefix (scan_above = 0), and whether every field matches the "xla" layout.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/dispatch-large/probe.py OUT.json
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import grouped_layout, layout, ranks

SHAPES = (("gpt-oss-20b", 16384, 32, 640), ("routing-bench", 32768, 128, 320),
          ("sonic-large", 131072, 256, 640))
TILE_ROWS = 128


def kernel_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  _, t = profiler.measure(fn, iterations=50)(*args)
  return float(np.median(t))


def main(out_path):
  rows = []
  for name, m, e, cap in SHAPES:
    ids = jnp.asarray(np.random.default_rng(0).integers(0, e, m), jnp.int32)
    num_tiles = layout.max_tiles(m, e, cap, TILE_ROWS)
    xla = jax.jit(lambda i, e=e, c=cap, n=num_tiles: grouped_layout(
        i, e, capacity=c, tile_rows=TILE_ROWS, num_tiles=n, implementation="xla"))
    want = jax.tree.leaves(xla(ids))
    config = ranks.default_ranks_config(e)
    blocks = -(-m // config.block_rows)
    rows.append(dict(shape=name, m=m, e=e, impl="xla", ms=kernel_ms(xla, ids)))
    print(rows[-1], flush=True)
    for label, above in (("in-kernel sum", 1 << 62), ("xla prefix", 0),
                         ("default", ranks.SCAN_ABOVE)):
      fn = jax.jit(lambda i, e=e, c=cap, n=num_tiles, a=above: layout.grouped_layout(
          i, num_experts=e, capacity=c, tile_rows=TILE_ROWS, num_tiles=n, config=config,
          interpret=False, scan_above=a))
      got = jax.tree.leaves(fn(ids))
      ok = all(bool((g == w).all()) for g, w in zip(got, want))
      rows.append(dict(shape=name, m=m, e=e, impl="pallas", path=label, blocks=blocks,
                       entries=blocks * blocks * ranks.experts_p2(e), ms=kernel_ms(fn, ids),
                       matches_xla=ok))
      print(rows[-1], flush=True)
  json.dump(rows, open(out_path, "w"), indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
