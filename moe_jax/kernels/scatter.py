"""Pallas (Triton) kernel for `scatter_rows`: out[dest[t, k]] = src[t] (* scale[t, k]).

The dispatch's pack written from the token side: each program loads a tile of source
rows once and stores it to the K buffer rows it feeds, so HBM sees every source byte
read once and every buffer byte written once (the strict-byte count). A gather
(`gather_rows`) instead reads each token K times, and those re-reads leave L2 when
the K slots of a token land far apart in the expert-sorted buffer.

One grid of two kinds of program, split on the first axis:
  - t < num_token_blocks: scatter a [BT, BH] tile of src to its K destinations;
  - otherwise: write zeros to the rows of a [BR, BH] output tile that no slot fills.
No two programs write the same element (destinations are distinct), so no atomics.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles, reference
from moe_jax.kernels.block_config import BlockConfig

KERNEL_NAME = "moe_scatter_rows"
# The launch order (`_tiles.Order`), by whether there is a slot scale: column-first
# took 7-10% off gpt-oss-20b's pack (2.6% off routing-bench's) and put 3-10% onto its
# scaled pack in the combine's backward (bench/results/nvidia-h200/row-order/).
COLUMNS_FASTEST = True
COLUMNS_FASTEST_SCALED = False


def _kernel(dest_ref, *refs, has_scale: bool, num_tokens: int, top_k: int, num_rows: int,
            h: int, block_rows: int, block_h: int, num_token_blocks: int,
            columns_fastest: bool):
  """Refs: dest [K, T] (all), scale [K, T] f32 (if has_scale), filled [R] int32 (all),
  src [T, BH] (one column tile, all rows), out [R, BH] (one column tile, all rows)."""
  if has_scale:
    scale_ref, filled_ref, src_ref, out_ref = refs
  else:
    (filled_ref, src_ref, out_ref), scale_ref = refs, None
  order = _tiles.Order(columns_fastest)
  i = order.row_block()
  cols = jnp.arange(block_h, dtype=jnp.int32)
  col_mask = _tiles.tail_mask(order.col_axis, block_h, h)  # [BH] or None

  @pl.when(i < num_token_blocks)
  def _scatter():
    start = i * block_rows
    token_mask = _range(start, block_rows) < num_tokens  # [BT]
    tokens = pl.ds(start, block_rows)
    x = _tiles.load(src_ref.at[tokens, :], _tiles.outer_and(token_mask, col_mask), 0)
    for k in range(top_k):
      dest = _tiles.load(dest_ref.at[jnp.int32(k), tokens], token_mask, -1)  # [BT]
      valid = (dest >= 0) & (dest < num_rows)
      # Masked-off lanes point one row past the tile: the GPU never touches them, and
      # the interpreter (which stores every lane, masked ones with the value it read)
      # drops an out-of-range row instead of writing a stale value over a valid one.
      rows = jnp.where(valid, dest, num_rows)
      y = x
      if scale_ref is not None:
        scale = _tiles.load(scale_ref.at[jnp.int32(k), tokens], token_mask, 0.0)
        y = (x.astype(jnp.float32) * scale[:, None]).astype(out_ref.dtype)
      _compat.store(out_ref.at[rows[:, None], cols[None, :]], y,
                    mask=jnp.broadcast_to(_tiles.outer_and(valid, col_mask), y.shape))

  @pl.when(i >= num_token_blocks)
  def _zero_unfilled():
    start = (i - num_token_blocks) * block_rows
    in_range = _range(start, block_rows) < num_rows
    rows = pl.ds(start, block_rows)
    empty = in_range & (_tiles.load(filled_ref.at[rows], in_range, 1) == 0)
    _tiles.store(out_ref.at[rows, :], jnp.zeros((block_rows, block_h), out_ref.dtype),
                 _tiles.outer_and(empty, col_mask))


def _range(start, block: int) -> jax.Array:
  return start + jnp.arange(block, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_rows", "config", "interpret",
                                             "columns_fastest"))
def scatter_rows(src: jax.Array, dest: jax.Array, scale: jax.Array | None,
                 rows_used: jax.Array | None = None, *, num_rows: int, config: BlockConfig,
                 interpret: bool, columns_fastest: bool | None = None) -> jax.Array:
  """Builds and runs the scatter kernel; inputs are validated by the API.

  Args:
    src: [T, H], T >= 1.
    dest: [T, K] int32, entries >= 0 distinct; < 0 (or >= R) writes nothing.
    scale: optional [T, K] float32.
    rows_used: optional int32 scalar: rows at or past it are not zeroed.
    num_rows: R.
    config: block_rows (tokens per scatter program, rows per zeroing program), block_h.
    interpret: run the kernel body in the Pallas interpreter (CPU, tests).
    columns_fastest: the launch order (`_tiles.Order`; a "row block" is a program of
      the grid's first kind or second, as in `_kernel`); None: COLUMNS_FASTEST, or
      COLUMNS_FASTEST_SCALED with a scale.

  Returns:
    [R, H] of src.dtype.
  """
  num_tokens, h = src.shape
  top_k = dest.shape[1]
  br, bh = config.block_rows, config.block_h
  # The zeroing programs need to know which rows some slot fills: R flags, set by XLA.
  filled = jnp.zeros((num_rows,), jnp.int32).at[
      reference.scatter_targets(dest, num_rows)].set(1, mode="drop")
  if rows_used is not None:  # rows nobody reads: flagged as filled, so never zeroed
    filled = jnp.where(jnp.arange(num_rows) >= rows_used, 1, filled)
  num_token_blocks = pl.cdiv(num_tokens, br)
  if columns_fastest is None:
    columns_fastest = COLUMNS_FASTEST if scale is None else COLUMNS_FASTEST_SCALED
  order = _tiles.Order(columns_fastest)
  grid = order.grid(num_token_blocks + pl.cdiv(num_rows, br), pl.cdiv(h, bh))
  whole = lambda shape: order.spec(shape, lambda i, j: (0,) * len(shape))  # noqa: E731
  operands = [dest.T] + ([scale.T] if scale is not None else []) + [filled, src]
  in_specs = ([whole((top_k, num_tokens))] * (2 if scale is not None else 1)
              + [whole((num_rows,)), order.spec((num_tokens, bh), lambda i, j: (0, j))])
  kernel = functools.partial(
      _kernel, has_scale=scale is not None, num_tokens=num_tokens, top_k=top_k,
      num_rows=num_rows, h=h, block_rows=br, block_h=bh, num_token_blocks=num_token_blocks,
      columns_fastest=columns_fastest)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_rows, h), src.dtype),
      grid=grid,
      in_specs=in_specs,
      # Every program may write any row of its column tile.
      out_specs=order.spec((num_rows, bh), lambda i, j: (0, j)),
      compiler_params=_compat.triton_compiler_params(
          num_warps=config.num_warps, num_stages=config.num_stages),
      interpret=interpret,
      name=KERNEL_NAME,
  )(*operands)
