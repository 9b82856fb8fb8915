"""Dispatch metadata: where every token-slot goes, computed once per call with static shapes.

A slot is one (token t, choice k) pair, flattened as s = t*K + k (M = T*K slots).
Binned mode lays the slots out in an [E, C] buffer (C = capacity). Dropless mode lays
the expert-sorted slots out in tiles of TM rows (`dropless_tile_rows`): each expert's
rows start on a tile boundary and its last tile is padded with empty rows, so that
every tile belongs to one expert (`tile_expert`) and a grouped matmul can run one
expert's weights per tile. Both layouts are described by two index arrays that the
row kernels consume:

  gather_slot   [R]     the slot feeding buffer row r, or -1 for an empty row
                        (R = E*C binned, R = num_tiles*TM dropless)
  combine_index [T, K]  the buffer row of each slot, or -1 for a dropped slot
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from moe_jax.kernels.block_config import next_power_of_two

# Largest dropless row tile: the grouped matmul's M tile on a GPU.
MAX_TILE_ROWS = 128
# Smallest: Triton's dot needs at least 16 rows.
MIN_TILE_ROWS = 16


def dropless_tile_rows(num_slots: int, num_experts: int) -> int:
  """TM of the dropless layout: next_pow2(M / E) clamped to [16, 128].

  Small batches (few rows per expert) get small tiles, so padding each expert to a
  tile costs little; large ones get the 128-row tile the grouped matmul runs best at.
  """
  tile = next_power_of_two(-(-num_slots // num_experts))
  return min(MAX_TILE_ROWS, max(MIN_TILE_ROWS, tile))


def dropless_num_tiles(num_slots: int, num_experts: int, tile_rows: int) -> int:
  """Static tile count that holds any routing: sum_e ceil(count_e / TM) <= this."""
  return max(1, min(num_slots, (num_slots + num_experts * (tile_rows - 1)) // tile_rows))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DispatchMeta:
  """Routing layout of one call. Array fields are int32 unless noted.

  Attributes:
    sort_order: [M] slot ids sorted by expert, stably (earlier slots first).
    sorted_experts: [M] expert of each sorted row.
    tokens_per_expert: [E] slots routed to each expert, before any drop.
    bins: [E] inclusive cumsum of tokens_per_expert.
    position: [M] each slot's position within its expert (slot order).
    keep: [M] bool, False for slots dropped by the capacity.
    gather_slot: [R] the slot feeding each buffer row, -1 for empty rows.
    combine_index: [T, K] each slot's buffer row, -1 if dropped.
    sorted_row: [M] the buffer row of each expert-sorted slot, -1 if dropped.
    tile_expert: [R / TM] the expert of each dropless row tile, -1 for unused tiles
      (tiles are in expert order, unused ones last); None in binned mode.
    tile_fill: [R / TM] rows of each dropless tile that hold a slot (its first rows;
      0 for unused tiles, TM but for each expert's last tile); None in binned mode.
    num_experts: E (static).
    top_k: K (static).
    capacity: C (static), or None in dropless mode.
  """
  sort_order: jax.Array
  sorted_experts: jax.Array
  tokens_per_expert: jax.Array
  bins: jax.Array
  position: jax.Array
  keep: jax.Array
  gather_slot: jax.Array
  combine_index: jax.Array
  sorted_row: jax.Array
  tile_expert: jax.Array | None
  tile_fill: jax.Array | None
  num_experts: int = dataclasses.field(metadata=dict(static=True))
  top_k: int = dataclasses.field(metadata=dict(static=True))
  capacity: int | None = dataclasses.field(metadata=dict(static=True))

  @property
  def gather_token(self) -> jax.Array:
    """[R] the token feeding each buffer row, -1 for empty rows."""
    return jnp.where(self.gather_slot >= 0, self.gather_slot // self.top_k, -1)

  @property
  def num_rows(self) -> int:
    """R: E*C in binned mode, num_tiles*TM in dropless mode."""
    return self.gather_slot.shape[0]

  @property
  def tile_rows(self) -> int | None:
    """TM of the dropless layout; None in binned mode."""
    if self.tile_expert is None:
      return None
    return self.num_rows // self.tile_expert.shape[0]

  @property
  def drop_fraction(self) -> jax.Array:
    return 1.0 - jnp.mean(self.keep.astype(jnp.float32))


def make_dispatch(expert_indices: jax.Array, num_experts: int, capacity: int | None, *,
                  tile_rows: int | None = None) -> DispatchMeta:
  """Builds the dispatch metadata from the router's choices.

  Args:
    expert_indices: [T, K] int32 expert ids in [0, E).
    num_experts: E.
    capacity: static C (binned mode), or None for dropless.
    tile_rows: dropless only: TM, a power of two >= 16; None picks
      `dropless_tile_rows(M, E)`.

  Returns:
    DispatchMeta. No host sync; every shape is static.
  """
  if expert_indices.ndim != 2:
    raise ValueError(f"expert_indices must be [T, K], got shape {expert_indices.shape}")
  if expert_indices.dtype != jnp.int32:
    raise ValueError(f"expert_indices must be int32, got {expert_indices.dtype}")
  if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
    raise ValueError(f"capacity must be a positive int or None, got {capacity!r}")
  num_tokens, top_k = expert_indices.shape
  m = num_tokens * top_k
  flat = expert_indices.reshape(m)  # [M]
  sort_order = jnp.argsort(flat, stable=True).astype(jnp.int32)  # [M]
  sorted_experts = flat[sort_order]
  tokens_per_expert = jnp.bincount(flat, length=num_experts).astype(jnp.int32)  # [E]
  bins = jnp.cumsum(tokens_per_expert).astype(jnp.int32)
  starts = bins - tokens_per_expert  # [E]
  rows = jnp.arange(m, dtype=jnp.int32)
  sorted_position = rows - starts[sorted_experts]  # [M], sorted order
  # sort_order is a permutation, so these scatters write each element once.
  position = jnp.zeros(m, jnp.int32).at[sort_order].set(sorted_position)
  if tile_rows is not None and (capacity is not None or not isinstance(tile_rows, int)
                                or tile_rows < MIN_TILE_ROWS or tile_rows & (tile_rows - 1)):
    raise ValueError(f"tile_rows must be None or (dropless only) a power of two >= "
                     f"{MIN_TILE_ROWS}, got {tile_rows!r} with capacity={capacity!r}")
  tile_expert = tile_fill = None
  if capacity is None:
    keep = jnp.ones(m, jnp.bool_)
    tm = tile_rows or dropless_tile_rows(m, num_experts)
    num_tiles = dropless_num_tiles(m, num_experts, tm)
    expert_tiles = (tokens_per_expert + tm - 1) // tm  # [E]
    tile_end = jnp.cumsum(expert_tiles).astype(jnp.int32)  # [E]
    sorted_row = (tile_end - expert_tiles)[sorted_experts] * tm + sorted_position  # [M]
    gather_slot = jnp.full(num_tiles * tm, -1, jnp.int32).at[sorted_row].set(sort_order)
    combine_index = jnp.zeros(m, jnp.int32).at[sort_order].set(sorted_row)
    t = jnp.arange(num_tiles, dtype=jnp.int32)
    tile_expert = jnp.sum(tile_end[None, :] <= t[:, None], axis=1, dtype=jnp.int32)
    tile_expert = jnp.where(tile_expert < num_experts, tile_expert, -1)  # [num_tiles]
    tile_fill = jnp.sum((gather_slot >= 0).reshape(num_tiles, tm), axis=1,
                        dtype=jnp.int32)  # [num_tiles]
  else:
    keep = position < capacity
    combine_index = jnp.where(keep, flat * capacity + position, -1)
    c = jnp.arange(capacity, dtype=jnp.int32)
    source_row = starts[:, None] + c[None, :]  # [E, C] row in sorted order
    valid = c[None, :] < tokens_per_expert[:, None]
    gathered = sort_order[jnp.clip(source_row, 0, m - 1)]
    gather_slot = jnp.where(valid, gathered, -1).reshape(num_experts * capacity)
    sorted_row = jnp.where(sorted_position < capacity,
                           sorted_experts * capacity + sorted_position, -1)
  return DispatchMeta(
      sort_order=sort_order,
      sorted_experts=sorted_experts,
      tokens_per_expert=tokens_per_expert,
      bins=bins,
      position=position,
      keep=keep,
      gather_slot=gather_slot,
      combine_index=combine_index.reshape(num_tokens, top_k),
      sorted_row=sorted_row.astype(jnp.int32),
      tile_expert=tile_expert,
      tile_fill=tile_fill,
      num_experts=num_experts,
      top_k=top_k,
      capacity=capacity,
  )
