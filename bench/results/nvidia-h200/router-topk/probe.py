"""The router's bias + top-k + softmax (`kernels.top_k_softmax`, NOTES variant 25) alone,
on the logits of four bench shapes: CUPTI kernel ms of one call (and its launches) for
"xla" and "pallas" under several blocks, and whether the indices match XLA's bit for
bit and the weights within 1e-6.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/router-topk/probe.py OUT.json
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax.kernels import BlockConfig, top_k_softmax
from moe_jax.kernels import topk

# (name, T, E, K)
SHAPES = (("gpt-oss-20b", 4096, 32, 4), ("notebook", 100, 128, 4),
          ("routing-bench", 16384, 128, 2), ("sonic-large", 16384, 256, 8))


def kernels_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  calls = [profiler.measure(fn, aggregate=False)(*args)[1] for _ in range(30)]
  names = [n for n, _ in calls[0]]
  calls = [c for c in calls if [n for n, _ in c] == names]
  times = np.median(np.array([[t for _, t in c] for c in calls]), axis=0)
  return float(times.sum()), len(names)


def main(out_path):
  rows = []
  for name, t, e, k in SHAPES:
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(t, e)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=e), jnp.float32)
    xla = jax.jit(lambda x, b, k=k: top_k_softmax(x, b, top_k=k, implementation="xla"))
    want = xla(logits, bias)
    ms, n = kernels_ms(xla, logits, bias)
    rows.append(dict(shape=name, t=t, e=e, k=k, impl="xla", ms=ms, launches=n))
    print(rows[-1], flush=True)
    default = topk.default_top_k_config(t, e)
    for bt in sorted({default.block_rows, 16, 32, 64, 128}):
      for warps in (2, 4):
        config = BlockConfig(block_rows=bt, block_h=default.block_h, num_warps=warps,
                             num_stages=1)
        fn = jax.jit(lambda x, b, k=k, c=config: top_k_softmax(
            x, b, top_k=k, implementation="pallas", config=c))
        got = fn(logits, bias)
        ms, n = kernels_ms(fn, logits, bias)
        rows.append(dict(
            shape=name, t=t, e=e, k=k, impl="pallas", block_rows=bt, num_warps=warps,
            default=config == default, ms=ms, launches=n,
            indices_equal=bool((got[1] == want[1]).all()),
            logits_equal=bool((got[0] == want[0]).all()),
            weights_max_abs=float(jnp.abs(got[2] - want[2]).max())))
        print(rows[-1], flush=True)
  json.dump(rows, open(out_path, "w"), indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
