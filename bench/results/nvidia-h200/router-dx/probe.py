"""Variant 53's probe (GPU only): x's gradient on gpt-oss-20b's shapes (T = 4096, K = 4,
E = 32, H = 2880; the rows' gradient R = 18304 rows, as the dropless layout's).

Before, as autodiff computes it: the Pallas combine of the rows' gradient, XLA's
dlogits (f32) . W (bf16) rounded to bf16, and their bf16 sum. After: one combine with
the product as its matmul term, at the API's default tile ([16, 128] at this H) and at
[32, 128]. CUPTI ms of each jitted function (every kernel it launches), three medians
of ten calls, and each result's largest difference from a float32 sum; writes the JSON
log given as argv[1].

  PYTHONPATH=$PWD python3 bench/results/nvidia-h200/router-dx/probe.py OUT.json [small]

(`small`: T = 64, H = 200, R = 300, for a dry run of the script itself.)
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench import gmm_probe
from moe_jax import kernels
from moe_jax.kernels import BlockConfig

T, K, E, H, R = (64, 4, 32, 200, 300) if sys.argv[2:] == ["small"] else (4096, 4, 32, 2880, 18304)
log = gmm_probe.Log(sys.argv[1], device=str(jax.devices()[0]))
keys = jax.random.split(jax.random.key(0), 3)
d_rows = jax.random.normal(keys[0], (R, H), jnp.bfloat16)
d_logits = jax.random.normal(keys[1], (T, E), jnp.float32)
w = jax.random.normal(keys[2], (E, H), jnp.bfloat16)
index = jnp.asarray(np.random.default_rng(3).permutation(R)[:T * K].reshape(T, K), jnp.int32)
P = dict(implementation="pallas")


def before(d_rows, index, d_logits, w):
  dx = kernels.combine_rows(d_rows, index, None, out_dtype=jnp.bfloat16, **P)
  return dx + jnp.dot(d_logits, w, preferred_element_type=jnp.float32).astype(jnp.bfloat16)


def after(d_rows, index, d_logits, w, config=None):
  return kernels.combine_rows(d_rows, index, None, matmul_lhs=d_logits, matmul_rhs=w,
                              out_dtype=jnp.bfloat16, config=config, **P)


def exact(d_rows, index, d_logits, w):
  dx = kernels.combine_rows(d_rows, index, None, out_dtype=jnp.float32, **P)
  return dx + jnp.dot(d_logits, w.astype(jnp.float32), precision="highest")


args = (d_rows, index, d_logits, w)
want = jax.jit(exact)(*args)


def diff(got):
  return float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)) / jnp.max(jnp.abs(want)))


cases = [("before", jax.jit(before)), ("after, default tile", jax.jit(after))]
for rows in (16, 32):
  cases.append((f"after, [{rows}, 128]", jax.jit(lambda *a, r=rows: after(
      *a, config=BlockConfig(block_rows=r, block_h=128, num_warps=4)))))
for name, fn in cases:
  try:
    log(case=name, ms=gmm_probe.cupti_ms(fn, args), rel_diff=diff(fn(*args)))
  except Exception as e:  # pylint: disable=broad-except
    log(case=name, error=f"{type(e).__name__}: {e}"[:300])
