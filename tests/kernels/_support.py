"""Shared pieces of the kernel tests: float64 NumPy oracles, data, the twin switch.

Every kernel test class is written once as a `Twin` base (no `Test` prefix, so
pytest does not collect it) and bound twice: `Test...Gpu` (marked `gpu`, compiled by
Triton) and `Test...Interpret` (the same kernel body in the Pallas interpreter, on
any backend).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat

# (rtol, atol, reason) of combine_rows against float64, keyed by output dtype. Inputs
# are exact in float64, so only the kernel's own roundings count.
TOLERANCES = {
    jnp.float32: (1e-6, 1e-6, "f32 products and a K-term f32 sum: a few ulps"),
    jnp.bfloat16: (1e-2, 1e-2, "f32 accumulation, one final rounding to bf16 (2^-8 relative)"),
}
# slot_dots: |got - want| <= SLOT_DOT_RTOL * sum_h |x_h * g_h|. The f32 sum of H
# products errs by at most ~log2(H) * 2^-24 of that magnitude in a tree reduction
# (the kernel) and H * 2^-24 in a serial one; 2e-6 covers H <= 4096 tree-wise.
SLOT_DOT_RTOL = 2e-6


# Tests that lower a kernel to Triton IR: on a CPU host only where this jaxlib hands
# the IR to XLA as bytes (`_compat.CAN_LOWER_TRITON_WITHOUT_GPU`).
lowers_triton = pytest.mark.skipif(
    not (_compat.CAN_LOWER_TRITON_WITHOUT_GPU or jax.default_backend() == "gpu"),
    reason="this jaxlib compiles Triton IR at lowering time, which needs a GPU",
)


@functools.lru_cache(maxsize=None)
def _jitted(fn, interpret: bool, kwargs: tuple):
  """One jitted Pallas call per (op, mode, static kwargs), so repeats hit the cache."""
  return jax.jit(lambda *a: fn(*a, implementation="pallas", interpret=interpret, **dict(kwargs)))


class Twin:
  """Base of every kernel test class: runs the Pallas implementation, compiled or not."""

  INTERPRET: bool

  def pallas(self, fn, *args, **kwargs):
    """`fn(*args, implementation="pallas", **kwargs)` under jit, in this twin's mode."""
    return _jitted(fn, self.INTERPRET, tuple(sorted(kwargs.items())))(*args)


def bits(x) -> np.ndarray:
  """The raw bits of an array, for bitwise comparison (NaN payloads included)."""
  x = np.asarray(x)
  return x.view(f"u{x.dtype.itemsize}")


def normal(seed: int, shape, dtype) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(dtype)


def random_index(seed: int, shape, num_src_rows: int, p_empty: float = 0.3) -> jax.Array:
  """int32 indices in [0, N) with duplicates, and -1 (empty) with probability p_empty."""
  rng = np.random.default_rng(seed)
  index = rng.integers(0, num_src_rows, shape)
  index[rng.random(shape) < p_empty] = -1
  return jnp.asarray(index, jnp.int32)


def f64(x) -> np.ndarray:
  return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def np_rows(src, index):
  """(valid, rows) in float64: rows of src at index clamped into [0, N)."""
  src, index = f64(src), np.asarray(index)
  return index >= 0, src[np.clip(index, 0, src.shape[0] - 1)]


def np_gather(src, index, scale=None):
  valid, rows = np_rows(src, index)  # [R], [R, H]
  if scale is not None:
    rows = rows * f64(scale)[:, None]
  return np.where(valid[:, None], rows, 0.0)


def np_combine(src, index, weight=None, bias=None, bias_index=None):
  valid, rows = np_rows(src, index)  # [T, K], [T, K, H]
  if bias is not None:
    has_bias, bias_rows = np_rows(bias, bias_index)  # [T, K], [T, K, H]
    rows = rows + np.where(has_bias[..., None], bias_rows, 0.0)
  w = np.ones(valid.shape) if weight is None else f64(weight)
  return np.einsum("tk,tkh->th", np.where(valid, w, 0.0), np.where(valid[..., None], rows, 0.0))


def np_slot_dots(src, index, g):
  """(dots [T, K], magnitude [T, K] = sum_h |x_h * g_h|) in float64."""
  valid, rows = np_rows(src, index)  # [T, K], [T, K, H]
  prod = np.where(valid[..., None], rows * f64(g)[:, None, :], 0.0)
  return prod.sum(-1), np.abs(prod).sum(-1)
