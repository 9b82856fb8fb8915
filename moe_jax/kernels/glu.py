"""Pallas (Triton) kernels for `tile_glu` and its gradient `tile_glu_grad`.

The experts' bias + GLU over the grouped tile layout, [R, 2I] (gate even, up odd) ->
[R, I]. Each program owns `block_rows` rows of one tile and `block_i` output columns;
it reads its tile's expert and fill first and, on an unused tile or past the fill,
writes zeros without reading h or g (XLA's fusion reads every row of the static
layout, about a third of which is unused in the grouped binned layout, and a used
tile's rows past its fill are ~10% of the dropless one's). The gradient kernel also
sums its dh columns over its rows, so the bias gradient needs no second pass over dh.

A 16-bit h enters as uint32 [R, I] (an XLA bitcast, no copy), and the gradient's dh
leaves the same way: each word holds one (gate, up) pair, gate in the low half, so
loads and stores are contiguous and vectorised and the pair is split and joined with
shifts in registers. Other dtypes, and the [E, 2I] bias table, load gate and up as two
stride-2 column sets through int32 vector indices (the interpreter takes vector
indexers, not strided slices); Triton cannot vectorise those (bench/NOTES.md,
variant 19).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels import reference
from moe_jax.kernels.block_config import BlockConfig

KERNEL_NAME = "moe_tile_glu"
GRAD_KERNEL_NAME = "moe_tile_glu_grad"
# The launch order (`_tiles.Order`): 5% faster on gpt-oss-20b's GLU gradient
# (bench/results/nvidia-h200/glu-order/).
COLUMNS_FASTEST = True


def _block(num_i: int, block_rows: int, block_i: int, column_axis: int):
  """(rows [BR, 1], columns [1, BI] of the output, masks [BR, BI] and [1, BI] or None,
  rows [BR]); `column_axis` is the grid axis of the column blocks (`_tiles.Order`)."""
  rows = jnp.arange(block_rows, dtype=jnp.int32)
  cols = jnp.arange(block_i, dtype=jnp.int32)
  col_mask = _tiles.tail_mask(column_axis, block_i, num_i)  # [BI] or None
  if col_mask is None:
    return rows[:, None], cols[None, :], None, None, rows
  mask = jnp.broadcast_to(col_mask[None, :], (block_rows, block_i))
  return rows[:, None], cols[None, :], mask, col_mask[None, :], rows


def packs(dtype) -> bool:
  """Whether [R, 2I] of this dtype travels packed as uint32 [R, I] (16-bit dtypes)."""
  return jnp.dtype(dtype).itemsize == 2


def pack(x: jax.Array) -> jax.Array:
  """[R, 2I] 16-bit -> uint32 [R, I], each element a (gate, up) pair (a bitcast)."""
  return jax.lax.bitcast_convert_type(x.reshape(x.shape[0], -1, 2), jnp.uint32)


def unpack(x: jax.Array, dtype) -> jax.Array:
  """The inverse of `pack`: uint32 [R, I] -> [R, 2I] of dtype."""
  return jax.lax.bitcast_convert_type(x, dtype).reshape(x.shape[0], -1)


def _load_pair(ref, rows, cols, mask, dtype):
  """(gate, up) [BR, BI] f32 of a block ref: uint32 [BR, BI] packed pairs of `dtype`
  (`packs(dtype)`), else an interleaved [BR, 2BI] block."""
  if ref.dtype == jnp.uint32:
    x = _tiles.load(ref.at[rows, cols], mask, 0)
    halves = (x & 0xFFFF, x >> 16)
    return tuple(jax.lax.bitcast_convert_type(v.astype(jnp.uint16), dtype).astype(jnp.float32)
                 for v in halves)
  gate = _tiles.load(ref.at[rows, 2 * cols], mask, 0)
  up = _tiles.load(ref.at[rows, 2 * cols + 1], mask, 0)
  return gate.astype(jnp.float32), up.astype(jnp.float32)


def _store_pair(ref, rows, cols, mask, gate, up):
  """Stores (gate, up) [BR, BI] (ref's element dtype, or 16-bit into a packed uint32 ref)."""
  if ref.dtype == jnp.uint32:
    lo, hi = (jax.lax.bitcast_convert_type(v, jnp.uint16).astype(jnp.uint32) for v in (gate, up))
    _tiles.store(ref.at[rows, cols], lo | (hi << 16), mask)
  else:
    _tiles.store(ref.at[rows, 2 * cols], gate, mask)
    _tiles.store(ref.at[rows, 2 * cols + 1], up, mask)


def _biased_pair(h_ref, bias_ref, expert, rows, cols, mask, row_mask, dtype):
  """(gate, up) [BR, BI] f32 of the h block plus `expert`'s bias from the [E, 2BI] table."""
  gate, up = _load_pair(h_ref, rows, cols, mask, dtype)
  row = jnp.full((1, 1), expert, jnp.int32)
  b_gate, b_up = _load_pair(bias_ref, row, cols, row_mask, bias_ref.dtype)
  return gate + b_gate, up + b_up


def _setup(expert_ref, fill_ref, num_i: int, block_rows: int, block_i: int,
           blocks_per_tile: int, has_fill: bool, columns_fastest: bool):
  """`_block`'s indices and masks, the rows kept ([BR, 1] bool: before their tile's fill,
  or None for every row), the tile's expert, and whether the block holds a kept row
  (`live`: a used tile's block that starts before its fill). Runs outside `pl.when`:
  the interpreter lowers no program_id inside a branch."""
  order = _tiles.Order(columns_fastest)
  rows, cols, mask, row_mask, rows_1d = _block(num_i, block_rows, block_i, order.col_axis)
  expert = expert_ref[0]
  kept, live = None, expert >= 0
  if has_fill:
    first_row = (order.row_block() % blocks_per_tile) * block_rows
    kept = (first_row + rows_1d < fill_ref[0])[:, None]
    live = jnp.logical_and(live, first_row < fill_ref[0])
  return rows, cols, mask, row_mask, kept, expert, live


def _fwd_kernel(expert_ref, fill_ref, bias_ref, h_ref, out_ref, *, act, dtype, num_i: int,
                block_rows: int, block_i: int, blocks_per_tile: int, has_fill: bool,
                columns_fastest: bool):
  """One [BR, BI] block of the output. Refs: expert [1] and fill [1] of this block's
  tile, bias [E, 2BI], h [BR, 2BI] (uint32 [BR, BI] packed pairs when `packs(dtype)`),
  out [BR, BI]. A block with no kept row (an unused tile's, or one past its tile's
  fill) writes zeros without reading h."""
  rows, cols, mask, row_mask, kept, expert, live = _setup(
      expert_ref, fill_ref, num_i, block_rows, block_i, blocks_per_tile, has_fill,
      columns_fastest)

  @pl.when(live)
  def _():
    gate, up = _biased_pair(h_ref, bias_ref, expert, rows, cols, mask, row_mask, dtype)
    a = reference.glu_pair(gate, up, **act)
    if kept is not None:
      a = jnp.where(kept, a, 0.0)
    _tiles.store(out_ref.at[rows, cols], a.astype(out_ref.dtype), mask)

  @pl.when(jnp.logical_not(live))
  def _():
    _tiles.store(out_ref.at[rows, cols], jnp.zeros((block_rows, block_i), out_ref.dtype), mask)


def _grad_kernel(expert_ref, fill_ref, bias_ref, h_ref, g_ref, dh_ref, gate_sum_ref,
                 up_sum_ref, *, act, dtype, num_i: int, block_rows: int, block_i: int,
                 blocks_per_tile: int, has_fill: bool, columns_fastest: bool,
                 zero_unused: bool):
  """dh of one [BR, 2BI] block and its column sums. Refs as `_fwd_kernel`, plus g
  [BR, BI]; outputs dh [BR, 2BI] (packed as h), gate_sum and up_sum [1, BI] (f32).
  A block with no kept row reads neither h nor g: its sums are 0, and so is its dh
  on a used tile (past the fill: the dx gmm and the weight gradient read those rows)
  and on an unused one when `zero_unused` (else unwritten)."""
  rows, cols, mask, row_mask, kept, expert, live = _setup(
      expert_ref, fill_ref, num_i, block_rows, block_i, blocks_per_tile, has_fill,
      columns_fastest)
  first = jnp.zeros((1, 1), jnp.int32)

  @pl.when(live)
  def _():
    gate, up = _biased_pair(h_ref, bias_ref, expert, rows, cols, mask, row_mask, dtype)
    g = _tiles.load(g_ref.at[rows, cols], mask, 0).astype(jnp.float32)
    _, vjp = jax.vjp(lambda x, y: reference.glu_pair(x, y, **act), gate, up)
    grads = vjp(g)
    if kept is not None:  # 0 past the fill, whatever h and g hold there
      grads = (jnp.where(kept, d, 0.0) for d in grads)
    d_gate, d_up = (d.astype(dtype) for d in grads)
    _store_pair(dh_ref, rows, cols, mask, d_gate, d_up)
    for d, ref in ((d_gate, gate_sum_ref), (d_up, up_sum_ref)):
      total = jnp.sum(d.astype(jnp.float32), axis=0, keepdims=True)  # [1, BI]
      _tiles.store(ref.at[first, cols], total, row_mask)

  write_zeros = jnp.logical_not(live)
  if not zero_unused:
    write_zeros = jnp.logical_and(write_zeros, expert >= 0)

  @pl.when(write_zeros)
  def _():
    zeros = jnp.zeros((block_rows, block_i), dtype)
    _store_pair(dh_ref, rows, cols, mask, zeros, zeros)

  @pl.when(jnp.logical_not(live))
  def _():
    for ref in (gate_sum_ref, up_sum_ref):
      _tiles.store(ref.at[first, cols], jnp.zeros((1, block_i), jnp.float32), row_mask)


def _launch_args(h, bias, tile_expert, tile_fill, config: BlockConfig, columns_fastest: bool):
  """Grid, its `_tiles.Order`, the shared in_specs and operands, and the static kernel
  parameters."""
  num_rows, two_i = h.shape
  num_i = two_i // 2
  (num_tiles,) = tile_expert.shape
  br, bi = config.block_rows, config.block_h
  blocks_per_tile = num_rows // num_tiles // br
  has_fill = tile_fill is not None
  fill = tile_fill if has_fill else jnp.zeros_like(tile_expert)
  order = _tiles.Order(columns_fastest)
  spec = order.spec
  in_specs = [
      spec((1,), lambda i, j: (i // blocks_per_tile,)),  # expert of the block's tile
      spec((1,), lambda i, j: (i // blocks_per_tile,)),  # fill of the block's tile
      spec((bias.shape[0], 2 * bi), lambda i, j: (0, j)),  # every expert's bias
      spec((br, bi if packs(h.dtype) else 2 * bi), lambda i, j: (i, j)),  # h
  ]
  params = dict(dtype=h.dtype, num_i=num_i, block_rows=br, block_i=bi,
                blocks_per_tile=blocks_per_tile, has_fill=has_fill,
                columns_fastest=columns_fastest)
  grid = order.grid(num_rows // br, pl.cdiv(num_i, bi))
  operands = [tile_expert, fill, bias, pack(h) if packs(h.dtype) else h]
  return grid, order, in_specs, operands, params


@functools.partial(jax.jit, static_argnames=("act", "config", "interpret", "columns_fastest"))
def tile_glu(h: jax.Array, bias: jax.Array, tile_expert: jax.Array,
             tile_fill: jax.Array | None, *, act: tuple, config: BlockConfig,
             interpret: bool, columns_fastest: bool = COLUMNS_FASTEST) -> jax.Array:
  """Builds and runs the GLU kernel; inputs are validated by the API.

  Args:
    h: [R, 2I]; bias: [E, 2I]; tile_expert: [num_tiles] int32; tile_fill: [num_tiles]
      int32 or None. block_rows must divide the tile height R / num_tiles.
    act: (("activation", name), ("alpha", a), ("limit", l)), hashable.
    config: block_rows rows of a tile and block_h output columns per program.
    columns_fastest: the launch order (`_tiles.Order`).

  Returns:
    [R, I] of h.dtype.
  """
  grid, order, in_specs, operands, params = _launch_args(h, bias, tile_expert, tile_fill,
                                                         config, columns_fastest)
  br, bi = config.block_rows, config.block_h
  return pl.pallas_call(
      functools.partial(_fwd_kernel, act=dict(act), **params),
      out_shape=jax.ShapeDtypeStruct((h.shape[0], params["num_i"]), h.dtype),
      grid=grid,
      in_specs=in_specs,
      out_specs=order.spec((br, bi), lambda i, j: (i, j)),
      compiler_params=_compat.triton_compiler_params(num_warps=config.num_warps,
                                                     num_stages=config.num_stages),
      interpret=interpret,
      name=KERNEL_NAME,
  )(*operands)


@functools.partial(jax.jit, static_argnames=("act", "config", "interpret", "zero_unused",
                                             "columns_fastest"))
def tile_glu_grad(h: jax.Array, bias: jax.Array, g: jax.Array, tile_expert: jax.Array,
                  tile_fill: jax.Array | None, *, act: tuple, config: BlockConfig,
                  interpret: bool, zero_unused: bool = True,
                  columns_fastest: bool = COLUMNS_FASTEST) -> tuple[jax.Array, jax.Array]:
  """Builds and runs the GLU gradient kernel; inputs are validated by the API.

  Returns:
    (dh [R, 2I] of h.dtype, sums [num_tiles, 2I] float32), as `reference.tile_glu_grad`
    (dh's unused tiles unwritten unless `zero_unused`).
  """
  grid, order, in_specs, operands, params = _launch_args(h, bias, tile_expert, tile_fill,
                                                         config, columns_fastest)
  br, bi = config.block_rows, config.block_h
  num_blocks, num_i = h.shape[0] // br, params["num_i"]
  sum_shape = jax.ShapeDtypeStruct((num_blocks, num_i), jnp.float32)
  sum_spec = order.spec((1, bi), lambda i, j: (i, j))
  packed = packs(h.dtype)
  dh_shape = jax.ShapeDtypeStruct((h.shape[0], num_i) if packed else h.shape,
                                  jnp.uint32 if packed else h.dtype)
  dh, gate_sum, up_sum = pl.pallas_call(
      functools.partial(_grad_kernel, act=dict(act), zero_unused=zero_unused, **params),
      out_shape=(dh_shape, sum_shape, sum_shape),
      grid=grid,
      in_specs=in_specs + [order.spec((br, bi), lambda i, j: (i, j))],
      out_specs=(order.spec((br, dh_shape.shape[1] // num_i * bi), lambda i, j: (i, j)),
                 sum_spec, sum_spec),
      compiler_params=_compat.triton_compiler_params(num_warps=config.num_warps,
                                                     num_stages=config.num_stages),
      interpret=interpret,
      name=GRAD_KERNEL_NAME,
  )(*operands, g)
  dh = unpack(dh, h.dtype) if packed else dh
  # [blocks, I] x 2 -> [blocks, 2I] interleaved -> per tile (a tile's blocks summed in order).
  sums = jnp.stack([gate_sum, up_sum], axis=-1).reshape(num_blocks, 2 * num_i)
  return dh, sums.reshape(tile_expert.shape[0], -1, 2 * num_i).sum(axis=1)
