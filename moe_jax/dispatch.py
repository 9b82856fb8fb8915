"""Dispatch metadata: where every token-slot goes, computed once per call with static shapes.

A slot is one (token t, choice k) pair, flattened as s = t*K + k (M = T*K slots).
Binned mode lays the slots out in an [E, C] buffer (C = capacity); dropless mode in
the M expert-sorted rows. Both are described by two index arrays that the row
kernels consume:

  gather_slot   [R]     the slot feeding buffer row r, or -1 for an empty row
                        (R = E*C binned, R = M dropless)
  combine_index [T, K]  the buffer row of each slot, or -1 for a dropped slot
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


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
  num_experts: int = dataclasses.field(metadata=dict(static=True))
  top_k: int = dataclasses.field(metadata=dict(static=True))
  capacity: int | None = dataclasses.field(metadata=dict(static=True))

  @property
  def gather_token(self) -> jax.Array:
    """[R] the token feeding each buffer row, -1 for empty rows."""
    return jnp.where(self.gather_slot >= 0, self.gather_slot // self.top_k, -1)

  @property
  def num_rows(self) -> int:
    """R: E*C in binned mode, M in dropless mode."""
    return self.gather_slot.shape[0]

  @property
  def drop_fraction(self) -> jax.Array:
    return 1.0 - jnp.mean(self.keep.astype(jnp.float32))


def make_dispatch(expert_indices: jax.Array, num_experts: int, capacity: int | None) -> DispatchMeta:
  """Builds the dispatch metadata from the router's choices.

  Args:
    expert_indices: [T, K] int32 expert ids in [0, E).
    num_experts: E.
    capacity: static C (binned mode), or None for dropless.

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
  if capacity is None:
    keep = jnp.ones(m, jnp.bool_)
    gather_slot = sort_order
    combine_index = jnp.zeros(m, jnp.int32).at[sort_order].set(rows)
  else:
    keep = position < capacity
    combine_index = jnp.where(keep, flat * capacity + position, -1)
    c = jnp.arange(capacity, dtype=jnp.int32)
    source_row = starts[:, None] + c[None, :]  # [E, C] row in sorted order
    valid = c[None, :] < tokens_per_expert[:, None]
    gathered = sort_order[jnp.clip(source_row, 0, m - 1)]
    gather_slot = jnp.where(valid, gathered, -1).reshape(num_experts * capacity)
  return DispatchMeta(
      sort_order=sort_order,
      sorted_experts=sorted_experts,
      tokens_per_expert=tokens_per_expert,
      bins=bins,
      position=position,
      keep=keep,
      gather_slot=gather_slot,
      combine_index=combine_index.reshape(num_tokens, top_k),
      num_experts=num_experts,
      top_k=top_k,
      capacity=capacity,
  )
