"""Public `expert_ranks(expert_ids [M], E) -> (position [M], counts [E])`: the dispatch's
counting sort. "xla" is `reference.expert_ranks` (a stable argsort), "pallas" the kernel
of `ranks.py`. `implementation` and `interpret` behave as in `api`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.kernels import ranks as _ranks
from moe_jax.kernels import reference
from moe_jax.kernels.api import Implementation, _check_config, _interpret, resolve_implementation
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
  if np.ndim(expert_ids) != 1 or expert_ids.dtype != jnp.int32 or np.shape(expert_ids)[0] < 1:
    raise ValueError(f"expert_ids must be a non-empty int32 [M] array, got shape "
                     f"{np.shape(expert_ids)} and dtype {expert_ids.dtype}")
  if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 1:
    raise ValueError(f"num_experts must be an int >= 1, got {num_experts!r}")
  if impl == "xla":
    return reference.expert_ranks(expert_ids, num_experts)
  _check_config(config)
  config = config or _ranks.default_ranks_config(num_experts)
  if config.block_h < num_experts:
    raise ValueError(f"config.block_h must be >= num_experts={num_experts} (one one-hot "
                     f"column per expert), got block_h={config.block_h}")
  return _ranks.expert_ranks(expert_ids, num_experts=num_experts, config=config,
                             interpret=_interpret(interpret))
