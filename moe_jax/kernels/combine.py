"""Pallas (Triton) kernel for `combine_rows`: out[t] = sum_k w[t, k] * src[index[t, k]].

A token-side gather-reduce: each program owns a [BT, BH] tile of the output and
reads the K source rows of each of its tokens, so the sum has one fixed order and no
atomics or scatter-add are needed. An optional bias row per slot (the experts' down
bias, `bias[bias_index[t, k]]`) is added to each source row before its weight: the
bias table is a few rows that stay in L2, so the layer never writes a biased copy of
its [R, H] expert output. An optional product `lhs @ rhs` ([T, E] x [E, H], E small)
joins the sum before its one rounding: the layer's x gradient adds the router's
`dlogits @ W` to the pack's gradient here, with no [T, H] product written and no
second pass to add it (bench/NOTES.md, variant 53).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels import reference
from moe_jax.kernels.block_config import BlockConfig

KERNEL_NAME = "moe_combine_rows"
# The launch order (`_tiles.Order`): rows first; column-first measured up to 8% slower
# (one case of four 1% faster; bench/results/nvidia-h200/row-order/).
COLUMNS_FASTEST = False
# E columns of the matmul term per dot: E = 32 (gpt-oss-20b) and 64 take one, 256 four.
MATMUL_CHUNK = 64


def _kernel(
    index_ref,
    *refs,
    has_weight: bool,
    has_bias: bool,
    has_matmul: bool,
    num_tokens: int,
    num_src_rows: int,
    num_bias_rows: int,
    h: int,
    top_k: int,
    block_tokens: int,
    block_h: int,
    columns_fastest: bool,
):
  """One [BT, BH] tile of out.

  Refs: index [BT, K] int32, weight [BT, K] f32 (if has_weight), bias_index [BT, K]
  int32 (if has_bias), lhs [BT, EP] f32 (if has_matmul), src [N, BH] (every row, one
  column tile), bias [B, BH] (if has_bias), rhs [EP, BH] bfloat16 (if has_matmul), out
  [BT, BH]. K need not be a power of two: each slot is loaded as its own [BT] column.
  """
  refs = list(refs)
  weight_ref = refs.pop(0) if has_weight else None
  bias_index_ref = refs.pop(0) if has_bias else None
  lhs_ref = refs.pop(0) if has_matmul else None
  src_ref = refs.pop(0)
  bias_ref = refs.pop(0) if has_bias else None
  rhs_ref = refs.pop(0) if has_matmul else None
  (out_ref,) = refs
  order = _tiles.Order(columns_fastest)
  row_mask = _tiles.tail_mask(order.row_axis, block_tokens, num_tokens)  # [BT] or None
  col_mask = _tiles.tail_mask(order.col_axis, block_h, h)  # [BH] or None
  acc = jnp.zeros((block_tokens, block_h), jnp.float32)
  for k in range(top_k):  # K is small and static: unrolled, summed in slot order.
    index = _tiles.load(index_ref.at[:, jnp.int32(k)], row_mask, -1)  # [BT]
    valid, rows = _tiles.safe_rows(index, num_src_rows)
    x = _tiles.gather_tile(src_ref, rows, valid, col_mask, block_h).astype(jnp.float32)
    if bias_ref is not None:
      bias_index = _tiles.load(bias_index_ref.at[:, jnp.int32(k)], row_mask, -1)  # [BT]
      has, bias_rows = _tiles.safe_rows(bias_index, num_bias_rows)
      b = _tiles.gather_tile(bias_ref, bias_rows, valid & has, col_mask, block_h)
      x = x + b.astype(jnp.float32)
    if weight_ref is not None:
      # Zero the weight of an empty slot too, so that 0 * inf cannot make a NaN.
      w = jnp.where(valid, _tiles.load(weight_ref.at[:, jnp.int32(k)], row_mask, 0.0), 0.0)  # [BT]
      x = w[:, None] * x
    acc = acc + x
  if has_matmul:
    lhs_mask, rhs_mask = _tiles.outer_and(row_mask, None), _tiles.outer_and(None, col_mask)
    num_e = lhs_ref.shape[1]
    chunk = min(num_e, MATMUL_CHUNK)
    for e0 in range(0, num_e, chunk):  # static chunks of E: bounded registers at any E
      part = slice(e0, e0 + chunk)
      lhs = _tiles.load(lhs_ref.at[:, part], _broadcast(lhs_mask, (block_tokens, chunk)), 0.0)
      rhs = _tiles.load(rhs_ref.at[part, :], _broadcast(rhs_mask, (chunk, block_h)), 0)
      # [BT, chunk] f32 as bf16 hi + lo (~2^-17 relative) x [chunk, BH] bf16: two exact
      # tensor-core products, summed in f32.
      acc = acc + reference.dot_f32(reference.split_terms(lhs, rhs.dtype), rhs)
  _tiles.store(out_ref, acc.astype(out_ref.dtype), _tiles.outer_and(row_mask, col_mask))


def _broadcast(mask: jax.Array | None, shape) -> jax.Array | None:
  return None if mask is None else jnp.broadcast_to(mask, shape)


@functools.partial(jax.jit, static_argnames=("out_dtype", "config", "interpret",
                                             "columns_fastest"))
def combine_rows(
    src: jax.Array,
    index: jax.Array,
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    bias_index: jax.Array | None = None,
    lhs: jax.Array | None = None,
    rhs: jax.Array | None = None,
    *,
    out_dtype: jnp.dtype,
    config: BlockConfig,
    interpret: bool,
    columns_fastest: bool = COLUMNS_FASTEST,
) -> jax.Array:
  """Builds and runs the combine kernel; inputs are validated by the API.

  Args:
    src: [N, H], N >= 1.
    index: [T, K] int32, T >= 1, K >= 1.
    weight: optional [T, K] float32.
    bias: optional [B, H], B >= 1, with bias_index [T, K] int32.
    lhs, rhs: optional [T, EP] float32 and [EP, H] bfloat16, EP a power of two >= 16
      (zero-padded past E); lhs @ rhs is added to each output row. config must then
      have block_rows >= 16 and block_h >= 16 (Triton's dot).
    out_dtype: dtype of the output.
    config: tiles of [T, H]; block_h need not divide H nor block_rows T.
    interpret: run the kernel body in the Pallas interpreter (CPU, tests).
    columns_fastest: the launch order (`_tiles.Order`).

  Returns:
    [T, H] of out_dtype.
  """
  num_src_rows, h = src.shape
  num_tokens, top_k = index.shape
  bt, bh = config.block_rows, config.block_h
  order = _tiles.Order(columns_fastest)
  slot_spec = order.spec((bt, top_k), lambda i, j: (i, 0))

  def column_spec(table):  # every row of one column tile
    return order.spec((table.shape[0], bh), lambda i, j: (0, j))

  has_weight, has_bias, has_matmul = weight is not None, bias is not None, lhs is not None
  slot_operands = [index] + [weight] * has_weight + [bias_index] * has_bias
  table_operands = [src] + [bias] * has_bias
  operands = slot_operands + [lhs] * has_matmul + table_operands + [rhs] * has_matmul
  lhs_specs = [order.spec((bt, lhs.shape[1]), lambda i, j: (i, 0))] if has_matmul else []
  in_specs = ([slot_spec] * len(slot_operands) + lhs_specs
              + [column_spec(t) for t in table_operands + [rhs] * has_matmul])
  kernel = functools.partial(
      _kernel,
      has_weight=has_weight,
      has_bias=has_bias,
      has_matmul=has_matmul,
      num_tokens=num_tokens,
      num_src_rows=num_src_rows,
      num_bias_rows=bias.shape[0] if has_bias else 0,
      h=h,
      top_k=top_k,
      block_tokens=bt,
      block_h=bh,
      columns_fastest=columns_fastest,
  )
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_tokens, h), out_dtype),
      grid=order.grid(pl.cdiv(num_tokens, bt), pl.cdiv(h, bh)),
      in_specs=in_specs,
      out_specs=order.spec((bt, bh), lambda i, j: (i, j)),
      compiler_params=_compat.triton_compiler_params(
          num_warps=config.num_warps, num_stages=config.num_stages
      ),
      interpret=interpret,
      name=KERNEL_NAME,
  )(*operands)
