"""Dispatch metadata: where every token-slot goes, computed once per call with static shapes.

A slot is one (token t, choice k) pair, flattened as s = t*K + k (M = T*K slots).
Two layouts:

- padded (binned only): an [E, C] buffer (C = capacity), slot s of expert e at
  row e*C + its position; every expert runs on all C rows (batched einsums).
- grouped: the expert-sorted slots in tiles of TM rows (`dropless_tile_rows`). Each
  expert's rows start on a tile boundary and its last tile is padded with empty
  rows, so every tile belongs to one expert (`tile_expert`) and a grouped matmul runs
  one expert's weights per tile. Dropless mode always uses it; binned mode may too
  (`grouped=True`): an expert then holds min(count, C) rows, the same slots as the
  padded layout keeps, and no GEMM row is spent on a bin's empty tail.

Both are described by two index arrays that the row kernels consume:

  gather_slot   [R]     the slot feeding buffer row r, or -1 for an empty row
                        (R = E*C padded, R = num_tiles*TM grouped)
  combine_index [T, K]  the buffer row of each slot, or -1 for a dropped slot
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from moe_jax import kernels
from moe_jax.kernels.block_config import next_power_of_two
from moe_jax.kernels.layout import max_tiles

# Largest dropless row tile: the grouped matmul's M tile on a GPU.
MAX_TILE_ROWS = 128
# Smallest: Triton's dot needs at least 16 rows.
MIN_TILE_ROWS = 16


def dropless_tile_rows(num_slots: int, num_experts: int) -> int:
  """TM of the grouped layout: next_pow2(M / E) (M: the slots it may hold) clamped to [16, 128].

  Small batches (few rows per expert) get small tiles, so padding each expert to a
  tile costs little; large ones get the 128-row tile the grouped matmul runs best at.
  """
  tile = next_power_of_two(-(-num_slots // num_experts))
  return min(MAX_TILE_ROWS, max(MIN_TILE_ROWS, tile))


def dropless_num_tiles(num_slots: int, num_experts: int, tile_rows: int) -> int:
  """Static tile count that holds any routing: sum_e ceil(count_e / TM) <= this."""
  return max_tiles(num_slots, num_experts, None, tile_rows)


def grouped_geometry(num_slots: int, num_experts: int, capacity: int | None,
                     tile_rows: int | None = None) -> tuple[int, int]:
  """(TM, num_tiles) of the grouped layout; with a capacity, experts hold <= C rows.

  tile_rows None picks TM = `dropless_tile_rows` of the slots that can be kept.

  Example:
    >>> grouped_geometry(16384, 32, 640)  # gpt-oss-20b, T=4096, K=4, cf 1.25
    (128, 159)
  """
  kept = num_slots if capacity is None else min(num_slots, num_experts * capacity)
  tm = tile_rows or dropless_tile_rows(kept, num_experts)
  return tm, max_tiles(num_slots, num_experts, capacity, tm)


def grouped_fits(num_slots: int, num_experts: int, capacity: int) -> bool:
  """Whether binned mode's grouped layout has no more rows than its [E, C] buffer.

  Then it never computes more GEMM rows than the padded layout, and fewer whenever a
  bin is not full. False where C is small next to the tile (the tail tiles of
  ceil(C / TM) * TM rows would outgrow C).
  """
  tm, tiles = grouped_geometry(num_slots, num_experts, capacity)
  return tm * tiles <= num_experts * capacity


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
    tile_expert: [R / TM] the expert of each row tile of the grouped layout, -1 for
      unused tiles (tiles are in expert order, unused ones last); None in the padded
      layout.
    tile_fill: [R / TM] rows of each grouped tile that hold a slot (its first rows;
      0 for unused tiles, TM but for each expert's last tile); None in the padded
      layout.
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
  def grouped(self) -> bool:
    """True for the grouped (tile) layout, False for the padded [E, C] one."""
    return self.tile_expert is not None

  @property
  def num_rows(self) -> int:
    """R: E*C in the padded layout, num_tiles*TM in the grouped one."""
    return self.gather_slot.shape[0]

  @property
  def tile_rows(self) -> int | None:
    """TM of the grouped layout; None in the padded one."""
    if self.tile_expert is None:
      return None
    return self.num_rows // self.tile_expert.shape[0]

  @property
  def drop_fraction(self) -> jax.Array:
    return 1.0 - jnp.mean(self.keep.astype(jnp.float32))


def make_dispatch(expert_indices: jax.Array, num_experts: int, capacity: int | None, *,
                  tile_rows: int | None = None, grouped: bool | None = None,
                  implementation: str | None = None) -> DispatchMeta:
  """Builds the dispatch metadata from the router's choices.

  Args:
    expert_indices: [T, K] int32 expert ids in [0, E). Ids are data, so they are not
      checked: an id outside [0, E) gives undefined counts and layout (the router's
      top-k never makes one).
    num_experts: E.
    capacity: static C (binned mode), or None for dropless.
    tile_rows: grouped layout only: TM, a power of two >= 16; None picks
      `grouped_geometry`'s.
    grouped: the layout: None (the default) is grouped when dropless and padded when
      binned; True asks for the grouped layout with a capacity too (experts keep
      their first C slots, as in the padded layout); False needs a capacity.
    implementation: of the counting sort and the grouped layout
      (`kernels.grouped_layout`, or `kernels.expert_ranks` in the padded layout): "xla"
      (a stable argsort and XLA ops), "pallas" (two kernels) or None for the best on
      this backend.

  Returns:
    DispatchMeta. No host sync; every shape is static.
  """
  if expert_indices.ndim != 2:
    raise ValueError(f"expert_indices must be [T, K], got shape {expert_indices.shape}")
  if expert_indices.dtype != jnp.int32:
    raise ValueError(f"expert_indices must be int32, got {expert_indices.dtype}")
  if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
    raise ValueError(f"capacity must be a positive int or None, got {capacity!r}")
  if grouped not in (None, True, False) or (grouped is False and capacity is None):
    raise ValueError(f"grouped must be None, True or (with a capacity) False, got "
                     f"{grouped!r} with capacity={capacity!r}")
  grouped = capacity is None if grouped is None else grouped
  if tile_rows is not None and (not grouped or not isinstance(tile_rows, int)
                                or tile_rows < MIN_TILE_ROWS or tile_rows & (tile_rows - 1)):
    raise ValueError(f"tile_rows must be None or (grouped layout only) a power of two >= "
                     f"{MIN_TILE_ROWS}, got {tile_rows!r} with grouped={grouped}")
  num_tokens, top_k = expert_indices.shape
  m = num_tokens * top_k
  flat = expert_indices.reshape(m)  # [M]
  if grouped:
    tm, num_tiles = grouped_geometry(m, num_experts, capacity, tile_rows)
    layout = kernels.grouped_layout(flat, num_experts, capacity=capacity, tile_rows=tm,
                                    num_tiles=num_tiles, implementation=implementation)
    position, tokens_per_expert = layout.position, layout.counts
    sort_order, sorted_experts = layout.sort_order, layout.sorted_experts
    sorted_row, gather_slot = layout.sorted_row, layout.gather_slot
    combine_index = layout.combine_index
    tile_expert, tile_fill = layout.tile_expert, layout.tile_fill
  else:
    # A counting sort: each slot's stable rank within its expert, then its sorted row.
    position, tokens_per_expert = kernels.expert_ranks(
        flat, num_experts, implementation=implementation)  # [M], [E]
    starts = jnp.cumsum(tokens_per_expert, dtype=jnp.int32) - tokens_per_expert  # [E]
    rows = jnp.arange(m, dtype=jnp.int32)
    # starts[e] + position is a permutation of [0, M): the scatter writes each row once.
    sort_order = jnp.zeros(m, jnp.int32).at[starts[flat] + position].set(rows)  # [M]
    sorted_experts = flat[sort_order]
    sorted_position = rows - starts[sorted_experts]  # [M], sorted order
    combine_index = jnp.where(position < capacity, flat * capacity + position, -1)
    c = jnp.arange(capacity, dtype=jnp.int32)
    source_row = starts[:, None] + c[None, :]  # [E, C] row in sorted order
    valid = c[None, :] < tokens_per_expert[:, None]
    gathered = sort_order[jnp.clip(source_row, 0, m - 1)]
    gather_slot = jnp.where(valid, gathered, -1).reshape(num_experts * capacity)
    sorted_row = jnp.where(sorted_position < capacity,
                           sorted_experts * capacity + sorted_position, -1)
    tile_expert = tile_fill = None
  bins = jnp.cumsum(tokens_per_expert).astype(jnp.int32)
  keep = jnp.ones(m, jnp.bool_) if capacity is None else position < capacity
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


def _padded_targets(meta: DispatchMeta) -> tuple[jax.Array, jax.Array]:
  """For each expert-sorted slot: its grouped row and its [E*C] padded row (E*C if dropped)."""
  if not meta.grouped or meta.capacity is None:
    raise ValueError(f"needs a binned dispatch in the grouped layout, got capacity="
                     f"{meta.capacity!r}, grouped={meta.grouped}")
  e_c = meta.num_experts * meta.capacity
  sorted_position = meta.position[meta.sort_order]
  kept = meta.sorted_row >= 0
  return (jnp.maximum(meta.sorted_row, 0),
          jnp.where(kept, meta.sorted_experts * meta.capacity + sorted_position, e_c))


def grouped_to_padded(rows: jax.Array, meta: DispatchMeta) -> jax.Array:
  """Grouped-layout rows [R, F] of a binned dispatch -> the padded [E, C, F] buffer.

  Slot positions match the padded layout's exactly; empty bin rows are 0.
  """
  if rows.ndim != 2 or rows.shape[0] != meta.num_rows:
    raise ValueError(f"rows must be [R={meta.num_rows}, F], got shape {rows.shape}")
  src, dst = _padded_targets(meta)
  e_c = meta.num_experts * meta.capacity
  buf = jnp.zeros((e_c, rows.shape[1]), rows.dtype).at[dst].set(rows[src], mode="drop")
  return buf.reshape(meta.num_experts, meta.capacity, rows.shape[1])


def padded_to_grouped(buf: jax.Array, meta: DispatchMeta) -> jax.Array:
  """The padded [E, C, F] buffer of a binned dispatch -> grouped-layout rows [R, F].

  Rows of the grouped layout that hold no slot are 0.
  """
  want = (meta.num_experts, meta.capacity)
  if buf.ndim != 3 or buf.shape[:2] != want:
    raise ValueError(f"buf must be [E, C, F] with (E, C)={want}, got shape {buf.shape}")
  src, dst = _padded_targets(meta)
  flat = buf.reshape(-1, buf.shape[2])
  rows_at = jnp.where(dst < flat.shape[0], src, meta.num_rows)  # dropped slots: out of bounds
  return jnp.zeros((meta.num_rows, buf.shape[2]), buf.dtype).at[rows_at].set(
      flat[jnp.minimum(dst, flat.shape[0] - 1)], mode="drop")
