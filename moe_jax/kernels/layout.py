"""Pallas (Triton) kernel for `grouped_layout`: the counting sort and the whole grouped
layout of the dispatch in two launches.

The first launch is `ranks.histogram` (each block's slots per expert). In the second,
program b of the blocks of BS slots:
- sums the histogram rows: all of them (each expert's count, hence the starts of the
  experts' sorted runs and of their runs of TM-row tiles) and those before block b
  (the ranks' offsets), a few [chunk, EP] tiles (or reads both from an XLA prefix over
  the blocks where they are many: `ranks.block_sums`);
- ranks its slots as `ranks._rank_kernel` does and writes, for each, its rank and its
  buffer row (slot order), and at its sorted index the slot, its expert and its row
  (scatters of a permutation: no two programs write one address);
- writes the slot id into the gather index at each kept slot's row, and -1 into the
  empty rows of its share of the R rows, and the expert and fill of its share of the
  tiles. The last program writes the counts.

It replaces the ~12 small XLA kernels that built the layout from the ranks (scatters,
cumsums, compares; bench/NOTES.md, variant 24). Same values as
`reference.grouped_layout`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels import ranks as _ranks
from moe_jax.kernels.block_config import BlockConfig, next_power_of_two
from moe_jax.kernels.reference import GroupedLayout

KERNEL_NAME = "moe_grouped_layout"


def max_tiles(num_slots: int, num_experts: int, capacity: int | None, tile_rows: int) -> int:
  """Tiles that hold any routing of M slots over E experts, each keeping its first
  min(count, C) slots in ceil(min(count, C) / TM) tiles: at most one partly filled
  tile per expert, and never more tiles than kept slots or than E * ceil(C / TM)."""
  kept = num_slots if capacity is None else min(num_slots, num_experts * capacity)
  tiles = max(1, min(kept, (kept + num_experts * (tile_rows - 1)) // tile_rows))
  if capacity is not None:
    tiles = min(tiles, num_experts * -(-capacity // tile_rows))
  return tiles


def _layout_kernel(ids_ref, hist_ref, position_ref, counts_ref, order_ref, sorted_expert_ref,
                   sorted_row_ref, gather_ref, combine_ref, tile_expert_ref, tile_fill_ref, *,
                   num_slots: int, num_experts: int, num_blocks: int, block: int,
                   experts_p2: int, chunk: int, capacity: int | None, tile_rows: int,
                   num_tiles: int, row_block: int, tile_block: int, scanned: bool):
  """Refs: ids [M], hist (`ranks.block_sums`); out: position, counts [E], sort_order,
  sorted_experts, sorted_row [M], gather_slot [R], combine_index [M], tile_expert,
  tile_fill [num_tiles]."""
  b = pl.program_id(0)
  experts = jnp.arange(experts_p2, dtype=jnp.int32)
  before, counts = _ranks.sum_histogram(hist_ref, b, num_blocks=num_blocks,
                                        experts_p2=experts_p2, chunk=chunk, total=True,
                                        scanned=scanned)
  kept = counts if capacity is None else jnp.minimum(counts, capacity)  # [EP]
  expert_tiles = jax.lax.div(kept + tile_rows - 1, tile_rows)
  tile_end = jnp.cumsum(expert_tiles, axis=0)  # [EP]; columns past E repeat the total
  tile_start = tile_end - expert_tiles
  starts = jnp.cumsum(counts, axis=0) - counts  # [EP] first sorted index of each expert

  # This block's slots.
  slots, own = _ranks.onehot_block(ids_ref, b, num_slots=num_slots, block=block,
                                   experts_p2=experts_p2)
  valid = slots < num_slots
  pick = lambda per_expert: jnp.sum(own * per_expert[None, :], axis=1)  # noqa: E731
  position = _ranks.block_ranks(own, before)  # [BS]
  keep = valid if capacity is None else valid & (position < capacity)
  row = jnp.where(keep, pick(tile_start) * tile_rows + position, -1)  # [BS]
  # Masked-off lanes get addresses past the array: in interpret mode a masked store
  # writes every lane back (old values where masked), so no masked lane may share an
  # in-bounds address with a written one; on the GPU they touch nothing.
  sorted_at = jnp.where(valid, pick(starts) + position, num_slots)
  _tiles.store(position_ref.at[slots], position, valid)
  _tiles.store(combine_ref.at[slots], row, valid)
  _tiles.store(order_ref.at[sorted_at], slots, valid)
  _tiles.store(sorted_expert_ref.at[sorted_at], pick(experts), valid)
  _tiles.store(sorted_row_ref.at[sorted_at], row, valid)
  num_rows = num_tiles * tile_rows
  _tiles.store(gather_ref.at[jnp.where(keep, row, num_rows)], slots, keep)

  def expert_of(tile):
    """(one-hot [N, EP] of the expert whose tiles hold `tile` [N], whether there is one)."""
    index = jnp.sum((tile_end[None, :] <= tile[:, None]).astype(jnp.int32), axis=1)
    return index[:, None] == experts[None, :], index < num_experts

  # The empty rows of this program's share of the R rows.
  r = b * row_block + jnp.arange(row_block, dtype=jnp.int32)
  sel, used = expert_of(jax.lax.div(r, tile_rows))
  offset = r - jnp.sum(jnp.where(sel, tile_start, 0), axis=1) * tile_rows
  empty = ~used | (offset >= jnp.sum(jnp.where(sel, kept, 0), axis=1))
  _tiles.store(gather_ref.at[r], jnp.full_like(r, -1), empty & (r < num_rows))

  # The expert and fill of this program's share of the tiles.
  t = b * tile_block + jnp.arange(tile_block, dtype=jnp.int32)
  sel, used = expert_of(t)
  first = jnp.sum(jnp.where(sel, tile_start, 0), axis=1)
  fill = jnp.clip(jnp.sum(jnp.where(sel, kept, 0), axis=1) - (t - first) * tile_rows,
                  0, tile_rows)
  expert = jnp.sum(jnp.where(sel, experts[None, :], 0), axis=1)
  _tiles.store(tile_expert_ref.at[t], jnp.where(used, expert, -1), t < num_tiles)
  _tiles.store(tile_fill_ref.at[t], jnp.where(used, fill, 0), t < num_tiles)

  @pl.when(b == pl.num_programs(0) - 1)
  def _():
    _tiles.store(counts_ref.at[experts], counts, experts < num_experts)


@functools.partial(jax.jit, static_argnames=("num_experts", "capacity", "tile_rows",
                                             "num_tiles", "config", "interpret", "scan_above"))
def grouped_layout(expert_ids: jax.Array, *, num_experts: int, capacity: int | None,
                   tile_rows: int, num_tiles: int, config: BlockConfig, interpret: bool,
                   scan_above: int = _ranks.SCAN_ABOVE) -> GroupedLayout:
  """Builds and runs the histogram and layout kernels; inputs are validated by the API.

  Args:
    expert_ids: [M] int32 in [0, E).
    num_experts: E; capacity: C or None; tile_rows: TM; num_tiles: the static tile count.
    config: as for `ranks.expert_ranks` (BS slots per program, EP one-hot columns).
    scan_above: see `ranks.block_sums`.

  Returns:
    `reference.GroupedLayout`, the same values as `reference.grouped_layout`.
  """
  (num_slots,) = expert_ids.shape
  block, ep = config.block_rows, config.block_h
  num_blocks = pl.cdiv(num_slots, block)
  num_rows = num_tiles * tile_rows
  hist, scanned = _ranks.block_sums(expert_ids, config, interpret, scan_above)
  m, r, nt = (jax.ShapeDtypeStruct((n,), jnp.int32) for n in (num_slots, num_rows, num_tiles))
  whole = _ranks.whole
  params = dict(num_slots=num_slots, num_experts=num_experts, num_blocks=num_blocks,
                block=block, experts_p2=ep, chunk=_ranks.histogram_chunk(num_blocks, ep),
                capacity=capacity, tile_rows=tile_rows, num_tiles=num_tiles,
                row_block=next_power_of_two(pl.cdiv(num_rows, num_blocks)),
                tile_block=next_power_of_two(pl.cdiv(num_tiles, num_blocks)), scanned=scanned)
  out = pl.pallas_call(
      functools.partial(_layout_kernel, **params),
      out_shape=(m, jax.ShapeDtypeStruct((num_experts,), jnp.int32), m, m, m, r, m, nt, nt),
      grid=(num_blocks,),
      in_specs=[whole(num_slots), whole(hist.shape[0])],
      out_specs=tuple(whole(s) for s in (num_slots, num_experts, num_slots, num_slots,
                                         num_slots, num_rows, num_slots, num_tiles,
                                         num_tiles)),
      compiler_params=_ranks.triton_params(config),
      interpret=interpret,
      name=KERNEL_NAME,
  )(expert_ids, hist)
  return GroupedLayout(*out)
