"""expert_ranks in two launches (histogram, then ranks; NOTES variant 23) on gpt-oss-20b's
slots (M = 16384, E = 32) and routing-bench's (M = 32768, E = 128): CUPTI kernel time
per call (ms, both launches) under several blocks, against the "xla" stable argsort,
and whether the ranks match it.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/ranks2-sweep/sweep.py OUT.json
"""
import itertools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import BlockConfig, expert_ranks
from moe_jax.kernels import ranks


def kernel_ms(fn, *args):
  fn(*args)[0].block_until_ready()
  _, t = profiler.measure(fn, iterations=50)(*args)
  return float(np.median(t))


def main(out_path):
  rows = []
  for m, e in ((16384, 32), (32768, 128)):
    ids = jnp.asarray(np.random.default_rng(0).integers(0, e, m), jnp.int32)
    want = expert_ranks(ids, e, implementation="xla")
    rows.append(dict(m=m, e=e, impl="xla", ms=kernel_ms(
        jax.jit(lambda i, e=e: expert_ranks(i, e, implementation="xla")), ids)))
    print(rows[-1], flush=True)
    ep = ranks.experts_p2(e)
    default = ranks.default_ranks_config(e)
    blocks = sorted({default.block_rows, default.block_rows // 2, default.block_rows * 2})
    for bs, warps in itertools.product(blocks, (4, 8)):
      config = BlockConfig(block_rows=bs, block_h=ep, num_warps=warps, num_stages=1)
      fn = jax.jit(lambda i, c=config, e=e: expert_ranks(i, e, implementation="pallas", config=c))
      got = fn(ids)
      ok = all(bool((g == w).all()) for g, w in zip(got, want))
      rows.append(dict(m=m, e=e, impl="pallas", block_rows=bs, num_warps=warps,
                       default=config == default, ms=kernel_ms(fn, ids), matches_xla=ok))
      print(rows[-1], flush=True)
  json.dump(rows, open(out_path, "w"), indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
