"""Pallas (Triton) kernels for `expert_ranks`: each slot's stable rank within its expert.

The dispatch's counting sort, in two launches over blocks of BS slots (EP = E rounded
up to a power of two):
- `_histogram_kernel`: program b writes its block's count of every expert, one
  [BS, EP] one-hot summed down the slots, to row b of a [blocks, EP] histogram.
- `_rank_kernel`: program b sums the histogram rows before its own (a few
  [chunk, EP] tiles; where the blocks are so many that this would add up to more than
  `RANKS_SCAN_ABOVE` entries, it reads its row of an XLA prefix over the blocks instead),
  then ranks its own slots with an inclusive cumsum of their one-hot down the slots;
  the last program also writes each expert's total.
Together they replace XLA's stable argsort (six kernels at gpt-oss-20b's M = 16384), its
bincount and the scatter that turns the sort back into slot order (bench/NOTES.md,
variants 21 and 23). No program walks the earlier blocks one by one.
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
HISTOGRAM_NAME = "moe_expert_histogram"
# Histogram entries all programs together may sum (~blocks^2 * EP) before the second
# launch reads an XLA prefix over the blocks instead (`block_sums`), one threshold per
# op from the crossings measured on an H200 (bench/NOTES.md, variant 41;
# `results/nvidia-h200/block-prefix/probe.json`, CUPTI ms, summed / prefix):
# - `grouped_layout` (SCAN_ABOVE, 2^26), whose programs also sum every row for the
#   totals: sonic-medium (512 blocks at EP = 64, 2^24) 0.029 / 0.040, routing-bench (512
#   at EP = 128, 2^25) 0.032 / 0.044 sum; sonic-large (4096 at EP = 256, 2^32) 1.97 / 0.20
#   scans.
# - `expert_ranks` (RANKS_SCAN_ABOVE, 1.5 * 2^24), whose program b sums only the rows
#   before b: gpt-oss-20b (2^17) 0.0050 / 0.0064 and sonic-medium 0.0130 / 0.0150 sum;
#   routing-bench 0.0159 / 0.0125 and sonic-large 0.906 / 0.061 scan.
SCAN_ABOVE = 1 << 26
RANKS_SCAN_ABOVE = 3 << 23
# Elements of a program's [BS, EP] one-hot block (and of the rank kernel's histogram
# tile), and the bounds on BS.
_BLOCK_ELEMENTS = 8192
_MIN_BLOCK, _MAX_BLOCK = 16, 1024


def experts_p2(num_experts: int) -> int:
  """EP: the one-hot's columns, E rounded up to a power of two >= 16."""
  return max(16, next_power_of_two(num_experts))


def default_ranks_config(num_experts: int) -> BlockConfig:
  """BS = block_rows slots per program, so that the [BS, EP] one-hot holds ~8K int32
  (block_h = EP); 4 warps, 1 stage. On an H200 (`bench/results/nvidia-h200/ranks2-sweep`)
  that is the fastest of the blocks tried at gpt-oss-20b's M = 16384, E = 32 (0.0049 ms
  for both launches, 0.0073 at 16K entries and 8 warps) and as fast as the old default
  at routing-bench's M = 32768, E = 128 (0.0144 ms; 0.0110 at 16K entries)."""
  ep = experts_p2(num_experts)
  bs = max(_MIN_BLOCK, min(_MAX_BLOCK, _BLOCK_ELEMENTS // ep))
  return BlockConfig(block_rows=bs, block_h=ep, num_warps=4, num_stages=1)


def onehot_block(ids_ref, j, *, num_slots: int, block: int, experts_p2: int):
  """(slots [BS], [BS, EP] int32 one-hot of block j's experts); slots past M match none."""
  experts = jnp.arange(experts_p2, dtype=jnp.int32)
  slots = j * block + jnp.arange(block, dtype=jnp.int32)
  ids = _tiles.load(ids_ref.at[slots], slots < num_slots, -1)
  return slots, (ids[:, None] == experts[None, :]).astype(jnp.int32)


def _histogram_kernel(ids_ref, hist_ref, *, num_slots: int, block: int, experts_p2: int):
  """Refs: ids [M], hist [blocks * EP] (row b: block b's slots per expert)."""
  b = pl.program_id(0)
  _, own = onehot_block(ids_ref, b, num_slots=num_slots, block=block, experts_p2=experts_p2)
  _compat.store(hist_ref.at[pl.ds(b * experts_p2, experts_p2)], jnp.sum(own, axis=0))


def histogram_chunk(num_blocks: int, experts_p2: int) -> int:
  """Histogram rows a program sums per loop step: ~8K entries, no more than the blocks."""
  return max(1, min(_BLOCK_ELEMENTS // experts_p2, next_power_of_two(num_blocks)))


def histogram(expert_ids: jax.Array, config: BlockConfig, interpret: bool) -> jax.Array:
  """[blocks * EP] int32: row b counts the slots of each expert in block b (BS slots)."""
  (num_slots,) = expert_ids.shape
  block, ep = config.block_rows, config.block_h
  num_blocks = pl.cdiv(num_slots, block)
  return pl.pallas_call(
      functools.partial(_histogram_kernel, num_slots=num_slots, block=block, experts_p2=ep),
      out_shape=jax.ShapeDtypeStruct((num_blocks * ep,), jnp.int32),
      grid=(num_blocks,),
      in_specs=[whole(num_slots)],
      out_specs=whole(num_blocks * ep),
      compiler_params=triton_params(config),
      interpret=interpret,
      name=HISTOGRAM_NAME,
  )(expert_ids)


def scans(num_slots: int, config: BlockConfig, scan_above: int) -> bool:
  """Whether `block_sums` gives the second launch an XLA prefix: blocks^2 * EP > scan_above.

  Example (routing-bench's and sonic-medium's slots under the ranks' threshold):
    >>> scans(32768, default_ranks_config(128), RANKS_SCAN_ABOVE)
    True
    >>> scans(65536, default_ranks_config(64), RANKS_SCAN_ABOVE)
    False
  """
  num_blocks = pl.cdiv(num_slots, config.block_rows)
  return num_blocks * num_blocks * config.block_h > scan_above


def block_sums(expert_ids: jax.Array, config: BlockConfig, interpret: bool,
               scan_above: int) -> tuple[jax.Array, bool]:
  """(hist, scanned): what the second launch reads to know the slots before its block.

  The [blocks * EP] histogram, which each program then sums itself (all programs
  together read ~blocks^2 * EP entries); or, where that is more than `scan_above`,
  its exclusive prefix over the blocks with the totals as one more row
  ([(blocks + 1) * EP], one XLA cumsum), of which each program reads one or two rows.
  """
  hist = histogram(expert_ids, config, interpret)
  ep = config.block_h
  num_blocks = hist.shape[0] // ep
  if not scans(expert_ids.shape[0], config, scan_above):
    return hist, False
  rows = hist.reshape(num_blocks, ep)
  inclusive = jnp.cumsum(rows, axis=0, dtype=jnp.int32)
  return jnp.concatenate([inclusive - rows, inclusive[-1:]]).reshape(-1), True


def whole(n: int) -> pl.BlockSpec:
  """The whole [n] array in every program (the kernels index it themselves)."""
  return pl.BlockSpec((n,), lambda b: (0,))


def triton_params(config: BlockConfig):
  """Triton's launch parameters of both launches, from the ranks config."""
  return _compat.triton_compiler_params(num_warps=config.num_warps,
                                        num_stages=config.num_stages)


def sum_histogram(hist_ref, b, *, num_blocks: int, experts_p2: int, chunk: int,
                  total: bool, scanned: bool) -> tuple[jax.Array, jax.Array | None]:
  """([EP] the histogram rows before block b summed, [EP] all rows summed or None).

  From a scanned histogram (`block_sums`), rows b and `num_blocks`; else a loop over
  [chunk, EP] tiles of the rows it needs: those before b, or all of them when `total`.
  """
  experts = jnp.arange(experts_p2, dtype=jnp.int32)
  zeros = jnp.zeros((experts_p2,), jnp.int32)
  if scanned:
    row = lambda i: _compat.load(hist_ref.at[pl.ds(i * experts_p2, experts_p2)])  # noqa: E731
    return row(b), row(num_blocks) if total else None

  def add_rows(c, acc):
    rows = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
    at = jnp.minimum(rows, num_blocks - 1)  # addresses stay inside hist where masked off
    need = rows < (num_blocks if total else b)
    tile = _compat.load(hist_ref.at[at[:, None] * experts_p2 + experts[None, :]],
                        mask=need[:, None], other=0)
    if not total:
      return acc[0] + jnp.sum(tile, axis=0), None
    earlier = jnp.sum(jnp.where((rows < b)[:, None], tile, 0), axis=0)
    return acc[0] + earlier, acc[1] + jnp.sum(tile, axis=0)

  steps = pl.cdiv(num_blocks, chunk) if total else pl.cdiv(b, chunk)
  return jax.lax.fori_loop(0, steps, add_rows, (zeros, zeros if total else None))


def block_ranks(own: jax.Array, before: jax.Array) -> jax.Array:
  """[BS] each slot's rank among its expert's slots, from the block's [BS, EP] one-hot
  and the [EP] slots of each expert in earlier blocks (slots of no expert get 0)."""
  return jnp.sum(own * (jnp.cumsum(own, axis=0) - 1 + before[None, :]), axis=1)


def _rank_kernel(ids_ref, hist_ref, position_ref, counts_ref, *, num_slots: int,
                 num_experts: int, num_blocks: int, block: int, experts_p2: int, chunk: int,
                 scanned: bool):
  """Refs: ids [M], hist (`block_sums`), position [M], counts [E] (the last program)."""
  b = pl.program_id(0)
  experts = jnp.arange(experts_p2, dtype=jnp.int32)
  before, _ = sum_histogram(hist_ref, b, num_blocks=num_blocks, experts_p2=experts_p2,
                            chunk=chunk, total=False, scanned=scanned)
  slots, own = onehot_block(ids_ref, b, num_slots=num_slots, block=block,
                            experts_p2=experts_p2)
  _tiles.store(position_ref.at[slots], block_ranks(own, before), slots < num_slots)

  @pl.when(b == pl.num_programs(0) - 1)
  def _():
    _tiles.store(counts_ref.at[experts], before + jnp.sum(own, axis=0), experts < num_experts)


@functools.partial(jax.jit, static_argnames=("num_experts", "config", "interpret",
                                             "scan_above"))
def expert_ranks(expert_ids: jax.Array, *, num_experts: int, config: BlockConfig,
                 interpret: bool, scan_above: int = RANKS_SCAN_ABOVE
                 ) -> tuple[jax.Array, jax.Array]:
  """Builds and runs the two kernels; inputs are validated by the API.

  Args:
    expert_ids: [M] int32 in [0, E).
    num_experts: E.
    config: block_rows = BS slots per program, block_h = EP >= E one-hot columns
      (a power of two), Triton's warps and stages (the latter pipeline the rank
      kernel's loop over the histogram).
    scan_above: see `block_sums`.

  Returns:
    (position [M] int32, counts [E] int32), as `reference.expert_ranks`.
  """
  (num_slots,) = expert_ids.shape
  block, ep = config.block_rows, config.block_h
  num_blocks = pl.cdiv(num_slots, block)
  hist, scanned = block_sums(expert_ids, config, interpret, scan_above)
  return pl.pallas_call(
      functools.partial(_rank_kernel, num_slots=num_slots, num_experts=num_experts,
                        num_blocks=num_blocks, block=block, experts_p2=ep,
                        chunk=histogram_chunk(num_blocks, ep), scanned=scanned),
      out_shape=(jax.ShapeDtypeStruct((num_slots,), jnp.int32),
                 jax.ShapeDtypeStruct((num_experts,), jnp.int32)),
      grid=(num_blocks,),
      in_specs=[whole(num_slots), whole(hist.shape[0])],
      out_specs=(whole(num_slots), whole(num_experts)),
      compiler_params=triton_params(config),
      interpret=interpret,
      name=KERNEL_NAME,
  )(expert_ids, hist)
