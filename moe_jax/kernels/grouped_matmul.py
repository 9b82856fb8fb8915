"""Pallas (Triton) kernels for the grouped matmuls of the dropless experts.

Rows are laid out in tiles of TM rows; every tile belongs to one expert (group) or
to none (`tile_group < 0`). Two kernels:

  gmm:  out[r] = lhs[r] @ rhs[g(r)]            ([R, K] x [E, K, N] -> [R, N])
        (or lhs[r] @ rhs[g(r)].T, rhs [E, N, K], for the input gradient)
  tgmm: out[e] = sum_{r: g(r) = e} lhs[r].T @ rhs[r]   ([R, K] x [R, N] -> [E, K, N])

gmm: one program per (row tile, column block of N), looping over K in blocks of BK;
the loop is what Triton software-pipelines (`num_stages`). A tile of no group writes
zeros. The grid is 1-D and `tile_and_column` maps the launch index to (row tile,
column block) in bands of `config.row_band` row tiles, so that the programs
resident at one time share lhs rows and weight columns in L2.
tgmm: one program per (K block, N block, group), looping over that group's tiles
[tile_start[e], tile_start[e+1]); a group with no tile writes zeros. The group is
the slowest grid axis, so resident programs read the same group's rows.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles, reference
from moe_jax.kernels.block_config import MatmulConfig

GMM_NAME = "moe_gmm"
TGMM_NAME = "moe_tgmm"


def _range_mask(start, block: int, extent: int) -> jax.Array | None:
  """In-bounds mask [block] of `start + arange(block) < extent`, or None if always true."""
  if extent % block == 0:
    return None
  return start + jnp.arange(block, dtype=jnp.int32) < extent


def _masked_load(ref, mask: jax.Array | None) -> jax.Array:
  """ref[...] with lanes outside `mask` (broadcast to the block) reading 0."""
  if mask is not None:
    mask = jnp.broadcast_to(mask, ref.shape)
  return _tiles.load(ref, mask, 0)


def tile_and_column(pid, num_tiles: int, num_cols: int, row_band: int):
  """(row tile, column block) of launch index `pid` of a 1-D gmm grid.

  Launch indices go band by band, a band being `row_band` consecutive row tiles
  (the last one may be short); inside a band the row tile varies fastest. A
  bijection from [0, num_tiles * num_cols) onto the (tile, column) pairs.
  """
  per_band = row_band * num_cols
  first = (pid // per_band) * row_band
  size = jnp.minimum(num_tiles - first, row_band)
  local = pid % per_band
  return first + local % size, local // size


def group_bands(tile_group: jax.Array, max_band: int) -> tuple[jax.Array, jax.Array]:
  """The launch bands of `MatmulConfig.row_band="expert"`: ([num_tiles] first tile of
  each tile's band, [num_tiles] that band's size), int32. Each run of tiles of one group
  is cut into bands of `max_band` tiles (the last one shorter); each unused tile
  (group < 0) is a band of its own."""
  num_tiles = tile_group.shape[0]
  t = jnp.arange(num_tiles, dtype=jnp.int32)
  g = tile_group.astype(jnp.int32)
  new_run = jnp.concatenate([jnp.ones((1,), bool), g[1:] != g[:-1]]) | (g < 0)
  run_start = jax.lax.cummax(jnp.where(new_run, t, 0))
  is_start = ((t - run_start) % max_band == 0) | (g < 0)
  band = jnp.cumsum(is_start.astype(jnp.int32)) - 1
  size = jax.ops.segment_sum(jnp.ones_like(t), band, num_segments=num_tiles)[band]
  return jax.lax.cummax(jnp.where(is_start, t, 0)), size.astype(jnp.int32)


def banded_tile_and_column(pid, num_cols: int, band_start, band_size):
  """`tile_and_column` over bands of any sizes (`group_bands`; refs or arrays): a band
  of s tiles from tile b owns launch indices [b * num_cols, (b + s) * num_cols), so
  launch index pid lies in the band of tile pid // num_cols; inside a band the row
  tile varies fastest."""
  t = pid // num_cols
  first, size = band_start[t], band_size[t]
  local = pid - first * num_cols
  return first + local % size, local // size


def _gmm_kernel(group_ref, lhs_ref, rhs_ref, out_ref, *, k: int, n: int, block_k: int,
                block_n: int, transpose_rhs: bool, precision, position):
  """One [TM, BN] tile of out. Refs: group [1], lhs [TM, K], rhs [E, K, N] (or
  [E, N, K]), out [TM, BN]. `position(pid)` is (row tile, column block)."""
  group = group_ref[0]
  _, j = position(pl.program_id(0))
  col_mask = _range_mask(j * block_n, block_n, n)  # [BN] or None
  tile_rows = out_ref.shape[0]

  @pl.when(group >= 0)
  def _():
    cols = pl.ds(j * block_n, block_n)

    def body(kk, acc):
      ks = pl.ds(kk * block_k, block_k)
      k_mask = _range_mask(kk * block_k, block_k, k)
      a = _masked_load(lhs_ref.at[:, ks], _tiles.outer_and(None, k_mask))  # [TM, BK]
      if transpose_rhs:
        b = _masked_load(rhs_ref.at[group, cols, ks], _tiles.outer_and(col_mask, k_mask))
        b = b.T  # [BK, BN]
      else:
        b = _masked_load(rhs_ref.at[group, ks, cols], _tiles.outer_and(k_mask, col_mask))
      return acc + jnp.dot(a, b, precision=precision, preferred_element_type=jnp.float32)

    acc = jax.lax.fori_loop(0, pl.cdiv(k, block_k), body,
                            jnp.zeros((tile_rows, block_n), jnp.float32))
    _tiles.store(out_ref, acc.astype(out_ref.dtype), _tiles.outer_and(None, col_mask))

  @pl.when(group < 0)
  def _():
    _tiles.store(out_ref, jnp.zeros((tile_rows, block_n), out_ref.dtype),
                 _tiles.outer_and(None, col_mask))


@functools.partial(jax.jit, static_argnames=("transpose_rhs", "out_dtype", "precision",
                                             "config", "interpret"))
def gmm(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array, *, transpose_rhs: bool,
        out_dtype, precision, config: MatmulConfig, interpret: bool) -> jax.Array:
  """Builds and runs the gmm kernel; inputs are validated by the API.

  Args:
    lhs: [R, K], R = num_tiles * TM, TM a power of two >= 16.
    rhs: [E, K, N], or [E, N, K] when transpose_rhs.
    tile_group: [num_tiles] int32 group of each tile, < 0 for none.
    transpose_rhs: multiply by rhs[e].T.
    out_dtype: output dtype (accumulation is float32).
    precision: lax precision of the in-kernel dot.
    config: BN, BK and launch parameters.
    interpret: run in the Pallas interpreter.

  Returns:
    [R, N] of out_dtype.
  """
  num_rows, k = lhs.shape
  (num_tiles,) = tile_group.shape
  tile_rows = num_rows // num_tiles
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  bn, bk = config.block_n, config.block_k
  num_cols = pl.cdiv(n, bn)
  position = functools.partial(tile_and_column, num_tiles=num_tiles, num_cols=num_cols,
                               row_band=min(config.row_band or num_tiles, num_tiles))
  kernel = functools.partial(_gmm_kernel, k=k, n=n, block_k=bk, block_n=bn,
                             transpose_rhs=transpose_rhs, precision=precision,
                             position=position)

  def tile(pid):
    return position(pid)[0]
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_rows, n), out_dtype),
      grid=(num_tiles * num_cols,),
      in_specs=[
          pl.BlockSpec((1,), lambda pid: (tile(pid),)),
          pl.BlockSpec((tile_rows, k), lambda pid: (tile(pid), 0)),
          pl.BlockSpec(rhs.shape, lambda pid: (0, 0, 0)),  # the kernel picks the group
      ],
      out_specs=pl.BlockSpec((tile_rows, bn), position),
      compiler_params=_compat.triton_compiler_params(
          num_warps=config.num_warps, num_stages=config.num_stages),
      interpret=interpret,
      name=GMM_NAME,
  )(tile_group, lhs, rhs)


def _tgmm_kernel(start_ref, lhs_ref, rhs_ref, out_ref, *, k: int, n: int, tile_rows: int,
                 block_k: int, block_n: int, precision):
  """One [BK, BN] tile of out[e]. Refs: start [E+1] (all), lhs [R, BK], rhs [R, BN],
  out [BK, BN] (group dim squeezed). Grid (K block, N block, group)."""
  e = pl.program_id(2)
  first, last = start_ref[e], start_ref[e + 1]
  k_mask = _tiles.tail_mask(0, block_k, k)
  n_mask = _tiles.tail_mask(1, block_n, n)

  def body(t, acc):
    rows = pl.ds(t * tile_rows, tile_rows)
    a = _masked_load(lhs_ref.at[rows, :], _tiles.outer_and(None, k_mask))  # [TM, BK]
    b = _masked_load(rhs_ref.at[rows, :], _tiles.outer_and(None, n_mask))  # [TM, BN]
    return acc + jnp.dot(a.T, b, precision=precision, preferred_element_type=jnp.float32)

  acc = jax.lax.fori_loop(first, last, body, jnp.zeros((block_k, block_n), jnp.float32))
  _tiles.store(out_ref, acc.astype(out_ref.dtype), _tiles.outer_and(k_mask, n_mask))


@functools.partial(jax.jit, static_argnames=("num_groups", "out_dtype", "precision", "config",
                                             "interpret"))
def tgmm(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array, *, num_groups: int, out_dtype,
         precision, config: MatmulConfig, interpret: bool) -> jax.Array:
  """Builds and runs the tgmm kernel; inputs are validated by the API.

  Args:
    lhs: [R, K]; rhs: [R, N]; R = num_tiles * TM.
    tile_group: [num_tiles] int32, nondecreasing over the tiles of a group, groups'
      tiles contiguous; < 0 (no group) only after every grouped tile.
    num_groups: E.
    out_dtype, precision, config, interpret: as for `gmm` (BK tiles K, BN tiles N).

  Returns:
    [E, K, N] of out_dtype.
  """
  num_rows, k = lhs.shape
  n = rhs.shape[1]
  (num_tiles,) = tile_group.shape
  tile_rows = num_rows // num_tiles
  counts = reference.group_tiles(tile_group, num_groups)  # [E]
  start = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(counts, dtype=jnp.int32)])
  bn, bk = config.block_n, config.block_k
  kernel = functools.partial(_tgmm_kernel, k=k, n=n, tile_rows=tile_rows, block_k=bk,
                             block_n=bn, precision=precision)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_groups, k, n), out_dtype),
      # Axis 0 varies fastest in launch order: the programs resident together are the
      # K and N blocks of one group, which re-read its rows from L2, not from HBM.
      grid=(pl.cdiv(k, bk), pl.cdiv(n, bn), num_groups),
      in_specs=[
          pl.BlockSpec((num_groups + 1,), lambda i, j, e: (0,)),
          pl.BlockSpec((num_rows, bk), lambda i, j, e: (0, i)),
          pl.BlockSpec((num_rows, bn), lambda i, j, e: (0, j)),
      ],
      out_specs=pl.BlockSpec((_compat.SQUEEZED, bk, bn), lambda i, j, e: (e, i, j)),
      compiler_params=_compat.triton_compiler_params(
          num_warps=config.num_warps, num_stages=config.num_stages),
      interpret=interpret,
      name=TGMM_NAME,
  )(start, lhs, rhs)
