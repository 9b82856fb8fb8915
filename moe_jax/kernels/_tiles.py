"""Helpers shared by the row kernels: the launch order, tail masks and the masked row
gather.

All of them run inside a Pallas kernel body, on the Triton lowering and in interpret
mode alike. Masks are static where they can be: a tail mask is `None` when the
extent is a multiple of the block, so the compiled kernel carries no dead compare.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat


@dataclasses.dataclass(frozen=True)
class Order:
  """The launch order of a (row block, column block) grid.

  Triton launches the grid's first axis fastest. Row blocks first walk each column
  block down the rows; `columns_fastest` walks each row block's column blocks in turn,
  so the programs resident together read and write whole rows rather than one narrow
  column strip of many (bench/NOTES.md, variant 45). Kernels take their block ids,
  grid and BlockSpecs from here, written as of (row block i, column block j).
  """
  columns_fastest: bool

  @property
  def row_axis(self) -> int:
    return 1 if self.columns_fastest else 0

  @property
  def col_axis(self) -> int:
    return 0 if self.columns_fastest else 1

  def grid(self, row_blocks: int, col_blocks: int) -> tuple[int, int]:
    return (col_blocks, row_blocks) if self.columns_fastest else (row_blocks, col_blocks)

  def spec(self, block_shape, index_map) -> pl.BlockSpec:
    """A BlockSpec whose `index_map(i, j)` takes the row and column block."""
    if self.columns_fastest:
      return pl.BlockSpec(block_shape, lambda j, i: index_map(i, j))
    return pl.BlockSpec(block_shape, index_map)

  def row_block(self) -> jax.Array:
    return pl.program_id(self.row_axis)


def tail_mask(axis: int, block: int, extent: int) -> jax.Array | None:
  """In-bounds mask `[block]` of this program's tile along grid `axis`, or None.

  Triton does not mask partial blocks, so a tile that runs past `extent` must mask
  its own loads and stores.
  """
  if extent % block == 0:
    return None
  start = pl.program_id(axis) * block
  return start + jnp.arange(block, dtype=jnp.int32) < extent


def outer_and(rows: jax.Array | None, cols: jax.Array | None) -> jax.Array | None:
  """`rows[:, None] & cols[None, :]` as a 2-D mask; None stands for all-true."""
  if rows is None and cols is None:
    return None
  if cols is None:
    return rows[:, None]
  if rows is None:
    return cols[None, :]
  return rows[:, None] & cols[None, :]


def load(ref, mask: jax.Array | None, other) -> jax.Array:
  """`ref[...]`, with masked-off lanes reading `other`; unmasked when mask is None."""
  if mask is None:
    return _compat.load(ref)
  return _compat.load(ref, mask=mask, other=other)


def store(ref, value: jax.Array, mask: jax.Array | None) -> None:
  """`ref[...] = value`, writing only where `mask` (broadcast to value) holds."""
  if mask is None:
    _compat.store(ref, value)
  else:
    _compat.store(ref, value, mask=jnp.broadcast_to(mask, value.shape))


def safe_rows(index: jax.Array, num_src_rows: int) -> tuple[jax.Array, jax.Array]:
  """(valid, row) for an index vector: valid = index >= 0, row clamped into [0, N).

  A clamped row keeps every computed address inside the source even where the load
  is masked off; indices >= N read row N-1 (the reference does the same).
  """
  valid = index >= 0
  return valid, jnp.where(valid, jnp.minimum(index, num_src_rows - 1), 0)


def gather_tile(
    src_ref, rows: jax.Array, valid: jax.Array, col_mask: jax.Array | None, block_h: int
) -> jax.Array:
  """Rows `rows` [BR] of the `[N, BH]` column tile `src_ref` -> [BR, BH].

  Lanes of invalid rows, and columns past H, read 0. Both dimensions are indexed by
  int32 vectors (not a slice): Triton turns that into one pointer tensor, and the
  interpret-mode discharge of a masked load accepts vector indexers only when no
  dimension is a slice.
  """
  cols = jnp.arange(block_h, dtype=jnp.int32)
  mask = outer_and(valid, col_mask)
  return _compat.load(src_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0)
