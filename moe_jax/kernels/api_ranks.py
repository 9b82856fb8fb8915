"""The dispatch's counting sort, public:

- `expert_ranks(expert_ids [M], E) -> (position [M], counts [E])`: "xla" is
  `reference.expert_ranks` (a stable argsort), "pallas" the kernels of `ranks.py`.
- `grouped_layout(expert_ids [M], E, capacity=, tile_rows=, num_tiles=)`: the sort and
  the whole grouped layout (`reference.GroupedLayout`); "xla" is
  `reference.grouped_layout`, "pallas" the kernels of `layout.py`.

`implementation` and `interpret` behave as in `api`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.kernels import layout as _layout
from moe_jax.kernels import ranks as _ranks
from moe_jax.kernels import reference
from moe_jax.kernels.api import (
    Implementation,
    _expert_columns_config,
    _interpret,
    resolve_implementation,
)
from moe_jax.kernels.block_config import BlockConfig


def expert_ranks(
    expert_ids: jax.Array,
    num_experts: int,
    *,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Each slot's stable rank among the slots that chose its expert, and the counts.

  Args:
    expert_ids: [M] int32 expert of each slot, in [0, E) (ids outside it are not
      checked on device; the layer's top-k never makes them).
    num_experts: E.
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas blocks: block_rows slots per program, block_h >= E one-hot columns;
      None picks `ranks.default_ranks_config(E)`. Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    position: [M] int32, the number of earlier slots (lower index) with the same
      expert; slot s is row starts[e] + position[s] of the expert-sorted order.
    counts: [E] int32 slots of each expert.

  Example:
    >>> expert_ranks(jnp.array([1, 0, 1, 1, 0], jnp.int32), 3)
    (Array([0, 0, 1, 2, 1], dtype=int32), Array([2, 3, 0], dtype=int32))
  """
  impl = resolve_implementation(implementation)
  _check_ids(expert_ids, num_experts)
  if impl == "xla":
    return reference.expert_ranks(expert_ids, num_experts)
  config = _ranks_config(config, num_experts)
  return _ranks.expert_ranks(expert_ids, num_experts=num_experts, config=config,
                             interpret=_interpret(interpret))


def grouped_layout(
    expert_ids: jax.Array,
    num_experts: int,
    *,
    capacity: int | None,
    tile_rows: int,
    num_tiles: int,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> reference.GroupedLayout:
  """The dispatch's grouped layout: each expert's first min(count, C) slots, in order,
  in its own run of TM-row tiles; experts in order, unused tiles last.

  Args:
    expert_ids: [M] int32 expert of each slot, in [0, E) (not checked on device).
    num_experts: E.
    capacity: C (binned mode: later slots of an expert are dropped), or None.
    tile_rows: TM, the rows of a tile.
    num_tiles: the static tile count: at least `layout.max_tiles(M, E, C, TM)`, which
      holds any routing (`dispatch.grouped_geometry` picks it).
    implementation, config, interpret: as for `expert_ranks`.

  Returns:
    `reference.GroupedLayout`: position, counts, sort_order, sorted_experts, sorted_row,
    gather_slot [num_tiles * TM], combine_index, tile_expert, tile_fill.
  """
  impl = resolve_implementation(implementation)
  _check_ids(expert_ids, num_experts)
  for name, value, low in (("tile_rows", tile_rows, 1), ("num_tiles", num_tiles, 1)):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
  if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool)
                               or capacity < 1):
    raise ValueError(f"capacity must be None or an int >= 1, got {capacity!r}")
  need = _layout.max_tiles(expert_ids.shape[0], num_experts, capacity, tile_rows)
  if num_tiles < need:
    raise ValueError(f"num_tiles must be >= {need} to hold any routing of "
                     f"M={expert_ids.shape[0]} slots over E={num_experts} experts with "
                     f"capacity={capacity}, tile_rows={tile_rows}; got {num_tiles}")
  if impl == "xla":
    return reference.grouped_layout(expert_ids, num_experts, capacity, tile_rows, num_tiles)
  config = _ranks_config(config, num_experts)
  return _layout.grouped_layout(expert_ids, num_experts=num_experts, capacity=capacity,
                                tile_rows=tile_rows, num_tiles=num_tiles, config=config,
                                interpret=_interpret(interpret))


def _check_ids(expert_ids: jax.Array, num_experts: int) -> None:
  if np.ndim(expert_ids) != 1 or expert_ids.dtype != jnp.int32 or np.shape(expert_ids)[0] < 1:
    raise ValueError(f"expert_ids must be a non-empty int32 [M] array, got shape "
                     f"{np.shape(expert_ids)} and dtype {expert_ids.dtype}")
  if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 1:
    raise ValueError(f"num_experts must be an int >= 1, got {num_experts!r}")


def _ranks_config(config: BlockConfig | None, num_experts: int) -> BlockConfig:
  """The Pallas blocks: `config`, checked, or the default for E."""
  return _expert_columns_config(config, _ranks.default_ranks_config(num_experts), num_experts,
                                "one one-hot column per expert")
