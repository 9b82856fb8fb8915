"""expert_ranks on gpt-oss-20b's slots (M = 16384, E = 32): the Pallas kernel under
several blocks against the "xla" stable argsort, CUPTI kernel time per call (ms).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/ranks-sweep/sweep.py OUT.json
"""
import itertools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import BlockConfig, expert_ranks


def kernel_ms(fn, *args):
  fn(*args)[0].block_until_ready()
  _, t = profiler.measure(fn, iterations=50)(*args)
  return float(np.median(t))


def main(out_path):
  m, e = 16384, 32
  ids = jnp.asarray(np.random.default_rng(0).integers(0, e, m), jnp.int32)
  want = expert_ranks(ids, e, implementation="xla")
  rows = [dict(impl="xla", ms=kernel_ms(jax.jit(lambda i: expert_ranks(i, e, implementation="xla")), ids))]
  for bs, warps, stages in itertools.product((256, 512, 1024), (4, 8), (1, 2, 3)):
    config = BlockConfig(block_rows=bs, block_h=32, num_warps=warps, num_stages=stages)
    fn = jax.jit(lambda i, c=config: expert_ranks(i, e, implementation="pallas", config=c))
    got = fn(ids)
    ok = all(bool((g == w).all()) for g, w in zip(got, want))
    rows.append(dict(impl="pallas", block_rows=bs, num_warps=warps, num_stages=stages,
                     ms=kernel_ms(fn, ids), matches_xla=ok))
    print(rows[-1], flush=True)
  json.dump(rows, open(out_path, "w"), indent=1)
  print(rows[0])


if __name__ == "__main__":
  main(sys.argv[1])
