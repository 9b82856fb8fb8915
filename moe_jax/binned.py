"""Differentiable dispatch ops: `binned_gather` and `binned_scatter`.

Each is a `jax.custom_vjp` written once over the row primitives of
`moe_jax.kernels` (gather_rows, combine_rows, slot_dots), so the same VJP serves
the "xla" and "pallas" implementations:

  gather:  fwd  buf[r]  = x[token(r)]                       (pack)
           bwd  dx[t]   = sum_k dbuf[row(t, k)]             (combine_rows, unweighted)
  scatter: fwd  y[t]    = sum_k w[t, k] * buf[row(t, k)]    (combine_rows, f32 accumulation)
           bwd  dbuf[r] = w[slot(r)] * dy[token(r)]         (pack with a slot scale)
                dw[t,k] = <buf[row(t, k)], dy[t]> in f32    (slot_dots)

`_pack` fills the buffer from the token side on "pallas" (`scatter_rows`: each token
row read once, written to its K rows) and from the row side on "xla" (`gather_rows`:
XLA's gather is fast where its scatter is not).

Dropped slots have row -1 and empty buffer rows have token -1: both contribute
zero to the output and to every gradient. No atomics anywhere, so results are
deterministic.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from moe_jax import kernels
from moe_jax.config import check_implementation
from moe_jax.dispatch import DispatchMeta


def _pack(src, gather_token, combine_index, implementation, scale=None, gather_slot=None):
  """buf[r] = src[token(r)] (* scale[slot(r)]), 0 for empty rows: [R, H].

  scale is [T, K] (per slot); the "xla" path needs gather_slot [R] to read it per row.
  """
  if kernels.resolve_implementation(implementation) == "pallas":
    return kernels.scatter_rows(src, combine_index, scale, num_rows=gather_token.shape[0],
                                implementation="pallas")
  row_scale = None
  if scale is not None:
    flat = scale.reshape(-1)
    row_scale = jnp.where(gather_slot >= 0, flat[jnp.maximum(gather_slot, 0)], 0.0)  # [R]
  return kernels.gather_rows(src, gather_token, row_scale, implementation="xla")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _gather(x, gather_token, combine_index, implementation):
  return _pack(x, gather_token, combine_index, implementation)


def _gather_fwd(x, gather_token, combine_index, implementation):
  return _gather(x, gather_token, combine_index, implementation), (gather_token, combine_index)


def _gather_bwd(implementation, res, g):
  gather_token, combine_index = res
  dx = kernels.combine_rows(g, combine_index, None, out_dtype=g.dtype,
                            implementation=implementation)  # [T, H]
  return dx, None, None


_gather.defvjp(_gather_fwd, _gather_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _scatter(rows, weights, combine_index, gather_token, gather_slot, implementation):
  return kernels.combine_rows(rows, combine_index, weights, out_dtype=rows.dtype,
                              implementation=implementation)


def _scatter_fwd(rows, weights, combine_index, gather_token, gather_slot, implementation):
  out = _scatter(rows, weights, combine_index, gather_token, gather_slot, implementation)
  return out, (rows, weights, combine_index, gather_token, gather_slot)


def _scatter_bwd(implementation, res, g):
  rows, weights, combine_index, gather_token, gather_slot = res
  d_rows = _pack(g, gather_token, combine_index, implementation, scale=weights,
                 gather_slot=gather_slot)
  d_weights = kernels.slot_dots(rows, combine_index, g, implementation=implementation)  # [T, K]
  return d_rows.astype(rows.dtype), d_weights.astype(weights.dtype), None, None, None


_scatter.defvjp(_scatter_fwd, _scatter_bwd)


def _buffer_shape(meta: DispatchMeta, hidden: int) -> tuple[int, ...]:
  if meta.grouped:
    return (meta.num_rows, hidden)  # [R, H] row tiles
  return (meta.num_experts, meta.capacity, hidden)  # [E, C, H]


def binned_gather(x: jax.Array, meta: DispatchMeta, *, implementation: str | None = None) -> jax.Array:
  """Gathers tokens into the expert buffer.

  Args:
    x: [T, H] tokens.
    meta: from `make_dispatch`.
    implementation: "xla", "pallas", or None (pallas on GPU, xla elsewhere).

  Returns:
    [E, C, H] in the padded layout, [R, H] expert-sorted row tiles in the grouped
    one (see `moe_jax.dispatch`); empty rows are zero; x's dtype.
  """
  check_implementation(implementation)
  if x.ndim != 2 or x.shape[0] != meta.combine_index.shape[0]:
    raise ValueError(
        f"x must be [T={meta.combine_index.shape[0]}, H], got shape {x.shape}")
  rows = _gather(x, meta.gather_token, meta.combine_index, implementation)
  return rows.reshape(_buffer_shape(meta, x.shape[1]))


def binned_scatter(y: jax.Array, meta: DispatchMeta, weights: jax.Array, *,
                   implementation: str | None = None) -> jax.Array:
  """Weighted combine of the expert buffer back to tokens.

  Each token sums its K slot rows in slot order, accumulating in float32.

  Args:
    y: [E, C, H] (padded layout) or [R, H] (grouped row tiles) expert outputs.
    meta: from `make_dispatch`.
    weights: [T, K] routing weights.
    implementation: "xla", "pallas", or None.

  Returns:
    [T, H] in y's dtype.
  """
  check_implementation(implementation)
  expected = _buffer_shape(meta, y.shape[-1])
  if y.shape != expected:
    raise ValueError(f"y must have shape {expected} for this dispatch, got {y.shape}")
  if weights.shape != meta.combine_index.shape:
    raise ValueError(f"weights must be [T, K]={meta.combine_index.shape}, got {weights.shape}")
  if not jnp.issubdtype(weights.dtype, jnp.floating):
    raise ValueError(f"weights must be floating, got {weights.dtype}")
  rows = y.reshape(meta.num_rows, y.shape[-1])
  return _scatter(rows, weights.astype(jnp.float32), meta.combine_index, meta.gather_token,
                  meta.gather_slot, implementation)
