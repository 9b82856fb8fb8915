"""Helpers shared by the scripts of this folder (run as `python3 <script> OUT.json ...`,
which puts this folder on sys.path)."""
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax import make_dispatch


def dropless_layout(rng, num_tokens, num_experts, top_k):
  """The dropless dispatch (expert-aligned row tiles) of a skewed top-k routing: random
  logits plus a linear ramp over the experts (the protocol of gmm-sweep/bands.py)."""
  logits = rng.standard_normal((num_tokens, num_experts)) + np.linspace(0, 1.5, num_experts)
  idx = np.argsort(-logits, axis=1)[:, :top_k].astype(np.int32)
  return make_dispatch(jnp.asarray(idx), num_experts, None)


def timeit(f, *args, n, warmup=2):
  """Host wall per call (ms) over n back-to-back calls after warm-up, one sync."""
  for _ in range(warmup):
    jax.block_until_ready(f(*args))
  t0 = time.perf_counter()
  for _ in range(n):
    out = f(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n * 1e3


def rel_err(got, want, groups=None):
  """Relative Frobenius error in float64; `groups` compares only got[:groups] (a
  medium weight gradient, [64, 4096, 28672], would take 60 GB of host memory)."""
  if groups is not None:
    got, want = got[:groups], want[:groups]
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


class Recorder:
  """Prints each row and rewrites the JSON file after every row (a run can be cut off)."""

  def __init__(self, path):
    self.path, self.rows = path, []

  def __call__(self, **row):
    self.rows.append(row)
    print(row, flush=True)
    with open(self.path, "w") as f:
      json.dump(self.rows, f, indent=1)
