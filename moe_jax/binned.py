"""Differentiable dispatch ops: `binned_gather` and `binned_scatter`.

Each is a `jax.custom_vjp` written once over the row primitives of
`moe_jax.kernels` (scatter_rows, gather_rows, combine_rows, slot_dots), so the same VJP serves
the "xla" and "pallas" implementations:

  gather:  fwd  buf[r]  = x[token(r)]                       (pack)
           bwd  dx[t]   = sum_k dbuf[row(t, k)]             (combine_rows, unweighted)
  scatter: fwd  y[t]    = sum_k w[t, k] * (buf[row(t, k)] + b[e(t, k)])
                                                            (combine_rows, f32 accumulation;
                                                             the bias b is optional)
           bwd  dbuf[r] = w[slot(r)] * dy[token(r)]         (pack with a slot scale)
                dw[t,k] = <buf[row(t, k)] + b[e(t, k)], dy[t]> in f32
                                                            (slot_dots, plus [T,H]x[H,E])
                db[e]   = sum of w[t, k] * dy[t] over e's kept slots  ([E,T]x[T,H])

`_pack` fills the buffer from the token side on "pallas" (`scatter_rows`: each token
row read once, written to its K rows) and from the row side on "xla" (`gather_rows`:
XLA's gather is fast where its scatter is not).

Dropped slots have row -1 and empty buffer rows have token -1: both contribute
zero to the output and to every gradient. No atomics anywhere, so results are
deterministic.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from moe_jax import kernels, routing
from moe_jax.config import check_implementation
from moe_jax.dispatch import DispatchMeta
from moe_jax.kernels import reference


def _pack(src, gather_token, combine_index, implementation, scale=None, gather_slot=None,
          rows_used=None):
  """buf[r] = src[token(r)] (* scale[slot(r)]), 0 for empty rows: [R, H].

  scale is [T, K] (per slot); the "xla" path needs gather_slot [R] to read it per row.
  rows_used: `kernels.scatter_rows`' (the empty rows past it may hold anything).
  """
  if kernels.resolve_implementation(implementation) == "pallas":
    return kernels.scatter_rows(src, combine_index, scale, num_rows=gather_token.shape[0],
                                rows_used=rows_used, implementation="pallas")
  row_scale = None
  if scale is not None:
    flat = scale.reshape(-1)
    row_scale = jnp.where(gather_slot >= 0, flat[jnp.maximum(gather_slot, 0)], 0.0)  # [R]
  return kernels.gather_rows(src, gather_token, row_scale, implementation="xla")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gather(x, gather_token, combine_index, rows_used, implementation):
  return _pack(x, gather_token, combine_index, implementation, rows_used=rows_used)


def _gather_fwd(x, gather_token, combine_index, rows_used, implementation):
  out = _gather(x, gather_token, combine_index, rows_used, implementation)
  return out, (gather_token, combine_index)


def _gather_bwd(implementation, res, g):
  gather_token, combine_index = res
  dx = kernels.combine_rows(g, combine_index, None, out_dtype=g.dtype,
                            implementation=implementation)  # [T, H]
  return dx, None, None, None


_gather.defvjp(_gather_fwd, _gather_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _scatter(rows, weights, bias, combine_index, slot_expert, gather_token, gather_slot,
             rows_used, implementation):
  return kernels.combine_rows(rows, combine_index, weights, bias=bias,
                              bias_index=None if bias is None else slot_expert,
                              out_dtype=rows.dtype, implementation=implementation)


def _scatter_fwd(rows, weights, bias, combine_index, slot_expert, gather_token, gather_slot,
                 rows_used, implementation):
  out = _scatter(rows, weights, bias, combine_index, slot_expert, gather_token, gather_slot,
                 rows_used, implementation)
  return out, (rows, weights, bias, combine_index, slot_expert, gather_token, gather_slot,
               rows_used)


def _slot_bias_grads(g, weights, bias, combine_index, slot_expert):
  """The bias term's gradients: d_weights[t, k] += <bias[e(t, k)], g[t]>, and
  d_bias[e] = sum over kept slots of expert e of w[t, k] * g[t]; both f32.

  Two [T, H] x [H, E] products (E is small), not a per-slot gather of [T, K, H] bias
  rows. g stays in its dtype; an f32 operand beside a 16-bit g is split into two
  16-bit terms (hi + lo), so both products run on tensor cores with f32 accumulation
  at ~2^-17 relative error (f32 g: one product at full f32 precision).
  """
  num_experts = bias.shape[0]
  kept = (combine_index >= 0) & (slot_expert >= 0)  # [T, K]
  expert = jnp.clip(slot_expert, 0, num_experts - 1)
  precision = jax.lax.Precision.HIGHEST if g.dtype == jnp.float32 else None
  g_dot_bias = reference.dot_f32(reference.split_terms(bias, g.dtype), g.T,
                                 precision=precision).T  # [T, E]
  d_weights = jnp.where(kept, jnp.take_along_axis(g_dot_bias, expert, axis=1), 0.0)
  onehot = (expert[..., None] == jnp.arange(num_experts)[None, None, :]) & kept[..., None]
  token_expert = jnp.sum(jnp.where(onehot, weights[..., None], 0.0), axis=1)  # [T, E]
  d_bias = reference.dot_f32(reference.split_terms(token_expert.T, g.dtype), g,
                              precision=precision)  # [E, H]
  return d_weights, d_bias


def _scatter_bwd(implementation, res, g):
  rows, weights, bias, combine_index, slot_expert, gather_token, gather_slot, rows_used = res
  d_rows = _pack(g, gather_token, combine_index, implementation, scale=weights,
                 gather_slot=gather_slot, rows_used=rows_used)
  d_weights = kernels.slot_dots(rows, combine_index, g, implementation=implementation)  # [T, K]
  d_bias = None
  if bias is not None:
    d_weights_bias, d_bias = _slot_bias_grads(g, weights, bias, combine_index, slot_expert)
    d_weights = d_weights + d_weights_bias
    d_bias = d_bias.astype(bias.dtype)
  return (d_rows.astype(rows.dtype), d_weights.astype(weights.dtype), d_bias, None, None,
          None, None, None)


_scatter.defvjp(_scatter_fwd, _scatter_bwd)


def _rows_used(meta: DispatchMeta, skip_unused: bool) -> jax.Array | None:
  """The grouped layout's rows up to the end of its last used tile (unused tiles come
  last), when skip_unused; else None."""
  if not skip_unused:
    return None
  if not meta.grouped:
    raise ValueError("skip_unused=True needs the grouped layout (meta.grouped), got the "
                     "padded one")
  num_tiles = meta.tile_expert.shape[0]
  return jnp.sum(meta.tile_expert >= 0, dtype=jnp.int32) * (meta.num_rows // num_tiles)


def _buffer_shape(meta: DispatchMeta, hidden: int) -> tuple[int, ...]:
  if meta.grouped:
    return (meta.num_rows, hidden)  # [R, H] row tiles
  return (meta.num_experts, meta.capacity, hidden)  # [E, C, H]


def binned_gather(x: jax.Array, meta: DispatchMeta, *, implementation: str | None = None,
                  skip_unused: bool = False) -> jax.Array:
  """Gathers tokens into the expert buffer.

  Args:
    x: [T, H] tokens.
    meta: from `make_dispatch`.
    implementation: "xla", "pallas", or None (pallas on GPU, xla elsewhere).
    skip_unused: grouped layout only: the rows of unused tiles may be left unwritten
      (they then hold anything), for a caller that never reads them (the layer).

  Returns:
    [E, C, H] in the padded layout, [R, H] expert-sorted row tiles in the grouped
    one (see `moe_jax.dispatch`); empty rows are zero (but with skip_unused); x's dtype.
  """
  check_implementation(implementation)
  if x.ndim != 2 or x.shape[0] != meta.combine_index.shape[0]:
    raise ValueError(
        f"x must be [T={meta.combine_index.shape[0]}, H], got shape {x.shape}")
  rows = _gather(x, meta.gather_token, meta.combine_index, _rows_used(meta, skip_unused),
                 implementation)
  return rows.reshape(_buffer_shape(meta, x.shape[1]))


def binned_scatter(y: jax.Array, meta: DispatchMeta, weights: jax.Array, *,
                   bias: jax.Array | None = None, expert_indices: jax.Array | None = None,
                   implementation: str | None = None, skip_unused: bool = False) -> jax.Array:
  """Weighted combine of the expert buffer back to tokens.

  Each token sums its K slot rows in slot order, accumulating in float32:
  y_out[t] = sum over kept k of weights[t, k] * (y[row(t, k)] + bias[expert(t, k)]).

  Args:
    y: [E, C, H] (padded layout) or [R, H] (grouped row tiles) expert outputs.
    meta: from `make_dispatch`.
    weights: [T, K] routing weights.
    bias: optional [E, H] per-expert bias (the experts' down bias), added in float32
      to each kept slot's row inside the combine, so the experts need not write a
      biased copy of y. Differentiable.
    expert_indices: [T, K] int32 expert of each slot (the indices `meta` was made
      from); required with bias.
    implementation: "xla", "pallas", or None.
    skip_unused: as for `binned_gather`, for y's gradient.

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
  slot_expert = None
  if bias is not None:
    want = (meta.num_experts, y.shape[-1])
    if bias.shape != want:
      raise ValueError(f"bias must be [E, H]={want}, got shape {bias.shape}")
    if expert_indices is None or expert_indices.shape != meta.combine_index.shape:
      got = None if expert_indices is None else expert_indices.shape
      raise ValueError(f"expert_indices must be [T, K]={meta.combine_index.shape} with bias, "
                       f"got {got}")
    if not jnp.issubdtype(expert_indices.dtype, jnp.integer):
      raise ValueError(f"expert_indices must be integer, got {expert_indices.dtype}")
    slot_expert = expert_indices.astype(jnp.int32)
  rows = y.reshape(meta.num_rows, y.shape[-1])
  return _scatter(rows, weights.astype(jnp.float32), bias, meta.combine_index, slot_expert,
                  meta.gather_token, meta.gather_slot, _rows_used(meta, skip_unused),
                  implementation)


# The most experts for which routed_gather's backward puts the router's term in the
# combine: its registers grow with E (offline ptxas at gpt-oss-20b's [16, 128] tile: 48
# without the term, 85 at E = 32, 123 at 64, 172 at 128), and only E <= 64 is measured.
FUSED_MAX_EXPERTS = 64


@dataclasses.dataclass(frozen=True)
class RouterFront:
  """How `routed_gather` routes and dispatches (static; its callables are hashed by id).

  Attributes:
    route_logits: (logits [T, E] f32, bias [E] f32) -> (logits + bias, indices [T, K],
      weights [T, K]), e.g. `routing.route_logits` with its options bound.
    dispatch: indices [T, K] -> `DispatchMeta`, e.g. `forward.layer_dispatch` with its
      config bound.
    precision: of the router GEMM.
    implementation: of the pack and of the x gradient's combine.
    skip_unused: on a grouped dispatch, leave the unused tiles' rows unwritten (as
      `binned_gather`'s skip_unused).
  """
  route_logits: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  dispatch: Callable[[jax.Array], DispatchMeta]
  precision: jax.lax.Precision | None = None
  implementation: str | None = None
  skip_unused: bool = False


def routed_gather(x: jax.Array, router_weight: jax.Array, router_bias: jax.Array,
                  front: RouterFront
                  ) -> tuple[jax.Array, jax.Array, jax.Array, DispatchMeta, jax.Array]:
  """The router, the dispatch and `binned_gather` as one differentiable op.

  The values are those of `routing.router_logits`, `front.route_logits`,
  `front.dispatch` and `binned_gather` called in turn. Its VJP differs in one place:
  x's gradient has two terms, the pack's (a combine of the rows' gradient) and the
  router's (dlogits @ W). For a bfloat16 x and E <= `FUSED_MAX_EXPERTS`, one
  `combine_rows` computes both, with the router's as its matmul term; separately they
  cost a GEMM writing [T, H] and an add reading both terms (bench/NOTES.md, variant
  53). Otherwise XLA's product and an add, at the router GEMM's precision.

  Args:
    x: [T, H] tokens (the router GEMM's dtype).
    router_weight: [E, H]; router_bias: [E].
    front: the routing and dispatch options.

  Returns:
    (logits + bias [T, E] f32, indices [T, K] int32, weights [T, K] f32, meta, rows in
    meta's buffer shape, x's dtype).
  """
  routing.check_router_inputs(x, router_weight, router_bias)
  if not isinstance(front, RouterFront):
    raise ValueError(f"front must be a RouterFront, got {type(front).__name__}")
  rows, outs = _routed_gather(x, router_weight, router_bias, front)
  meta = outs[3]
  return outs[:3] + (meta, rows.reshape(_buffer_shape(meta, x.shape[1])))


def _front(x, router_weight, router_bias, front, route_logits):
  """(rows [R, H], (z, indices, weights, meta)), with `route_logits` applied to the
  logits and the f32 bias; also returns route_logits' extra result, if any."""
  logits = routing.router_logits(x, router_weight, precision=front.precision)
  routed, extra = route_logits(logits, router_bias.astype(jnp.float32))
  meta = front.dispatch(routed[1])
  rows = _pack(x, meta.gather_token, meta.combine_index, front.implementation,
               rows_used=_rows_used(meta, front.skip_unused and meta.grouped))
  return (rows, tuple(routed) + (meta,)), extra


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _routed_gather(x, router_weight, router_bias, front):
  return _front(x, router_weight, router_bias, front,
                lambda z, b: (front.route_logits(z, b), None))[0]


def _routed_gather_fwd(x, router_weight, router_bias, front):
  out, route_vjp = _front(x, router_weight, router_bias, front,
                          lambda z, b: jax.vjp(front.route_logits, z, b))
  return out, (x, router_weight, router_bias, out[1][3].combine_index, route_vjp)


def _routed_gather_bwd(front, res, cotangents):
  x, router_weight, router_bias, combine_index, route_vjp = res
  d_rows, (dz, d_indices, d_weights, _) = cotangents
  d_logits, d_bias = route_vjp((dz, d_indices, d_weights))  # [T, E] f32, [E] f32
  w = router_weight.astype(x.dtype)
  if x.dtype == jnp.bfloat16 and w.shape[0] <= FUSED_MAX_EXPERTS:
    dx = kernels.combine_rows(d_rows, combine_index, None, matmul_lhs=d_logits, matmul_rhs=w,
                              out_dtype=x.dtype, implementation=front.implementation)
  else:
    dx = kernels.combine_rows(d_rows, combine_index, None, out_dtype=x.dtype,
                              implementation=front.implementation)
    dx = dx + jnp.dot(d_logits, w, precision=front.precision,
                      preferred_element_type=jnp.float32).astype(x.dtype)
  # As autodiff of router_logits: the product in f32, rounded to x's dtype (the GEMM's
  # operand dtype), then to the weight's own.
  d_weight = jnp.einsum("te,th->eh", d_logits, x, precision=front.precision,
                        preferred_element_type=jnp.float32)
  d_weight = d_weight.astype(x.dtype).astype(router_weight.dtype)
  return dx, d_weight, d_bias.astype(router_bias.dtype)


_routed_gather.defvjp(_routed_gather_fwd, _routed_gather_bwd)
