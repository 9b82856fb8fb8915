"""Pallas (Triton) kernel for `expert_ranks`: each slot's stable rank within its expert.

The dispatch's counting sort. Program b owns slots [b*BS, (b+1)*BS): it counts the
slots of every expert in the blocks before its own (a loop over those blocks, one
[BS, EP] one-hot sum each; EP = E rounded up to a power of two), then ranks its own
slots with an inclusive cumsum of its one-hot block down the slots. The last program
also writes each expert's total. One launch replaces XLA's stable argsort (six
kernels at gpt-oss-20b's M = 16384), its bincount and the scatter that turns the sort
back into slot order (bench/NOTES.md, variant 21).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels.block_config import BlockConfig, next_power_of_two

KERNEL_NAME = "moe_expert_ranks"
# Elements of a program's [BS, EP] one-hot block, and the bounds on BS.
_BLOCK_ELEMENTS = 16384
_MIN_BLOCK, _MAX_BLOCK = 16, 1024


def experts_p2(num_experts: int) -> int:
  """EP: the one-hot's columns, E rounded up to a power of two >= 16."""
  return max(16, next_power_of_two(num_experts))


def default_ranks_config(num_experts: int) -> BlockConfig:
  """BS = block_rows slots per program, so that the [BS, EP] one-hot holds ~16K int32
  (block_h = EP); 8 warps, 1 stage."""
  ep = experts_p2(num_experts)
  bs = max(_MIN_BLOCK, min(_MAX_BLOCK, _BLOCK_ELEMENTS // ep))
  return BlockConfig(block_rows=bs, block_h=ep, num_warps=8, num_stages=1)


def _kernel(ids_ref, position_ref, counts_ref, *, num_slots: int, num_experts: int,
            block: int, experts_p2: int):
  """Refs: ids [M] (every slot), position [M], counts [E] (written by the last program)."""
  b = pl.program_id(0)
  experts = jnp.arange(experts_p2, dtype=jnp.int32)

  def onehot(j):
    """[BS, EP] int32 one-hot of block j's experts (slots past M match none)."""
    slots = j * block + jnp.arange(block, dtype=jnp.int32)
    ids = _tiles.load(ids_ref.at[slots], slots < num_slots, -1)
    return slots, (ids[:, None] == experts[None, :]).astype(jnp.int32)

  before = jax.lax.fori_loop(0, b, lambda j, acc: acc + jnp.sum(onehot(j)[1], axis=0),
                             jnp.zeros((experts_p2,), jnp.int32))  # [EP]
  slots, own = onehot(b)
  ranks = jnp.cumsum(own, axis=0) - 1 + before[None, :]  # [BS, EP]
  position = jnp.sum(own * ranks, axis=1)  # [BS]; a slot of no expert (past M) gets 0
  _tiles.store(position_ref.at[slots], position, slots < num_slots)

  @pl.when(b == pl.num_programs(0) - 1)
  def _():
    _tiles.store(counts_ref.at[experts], before + jnp.sum(own, axis=0), experts < num_experts)


@functools.partial(jax.jit, static_argnames=("num_experts", "config", "interpret"))
def expert_ranks(expert_ids: jax.Array, *, num_experts: int, config: BlockConfig,
                 interpret: bool) -> tuple[jax.Array, jax.Array]:
  """Builds and runs the rank kernel; inputs are validated by the API.

  Args:
    expert_ids: [M] int32 in [0, E).
    num_experts: E.
    config: block_rows = BS slots per program, block_h = EP >= E one-hot columns
      (a power of two), Triton's warps and stages (the latter pipeline the loop over
      the earlier blocks).

  Returns:
    (position [M] int32, counts [E] int32), as `reference.expert_ranks`.
  """
  (num_slots,) = expert_ids.shape
  block = config.block_rows
  params = dict(num_slots=num_slots, num_experts=num_experts, block=block,
                experts_p2=config.block_h)
  whole = lambda n: pl.BlockSpec((n,), lambda b: (0,))  # noqa: E731
  return pl.pallas_call(
      functools.partial(_kernel, **params),
      out_shape=(jax.ShapeDtypeStruct((num_slots,), jnp.int32),
                 jax.ShapeDtypeStruct((num_experts,), jnp.int32)),
      grid=(pl.cdiv(num_slots, block),),
      in_specs=[whole(num_slots)],
      out_specs=(whole(num_slots), whole(num_experts)),
      compiler_params=_compat.triton_compiler_params(num_warps=config.num_warps,
                                                     num_stages=config.num_stages),
      interpret=interpret,
      name=KERNEL_NAME,
  )(expert_ids)
