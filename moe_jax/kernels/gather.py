"""Pallas (Triton) kernel for `gather_rows`: out[r] = src[index[r]] (* scale[r])."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels.block_config import BlockConfig

KERNEL_NAME = "moe_gather_rows"


def _kernel(
    index_ref,
    *refs,
    has_scale: bool,
    num_rows: int,
    num_src_rows: int,
    h: int,
    block_rows: int,
    block_h: int,
):
  """One [BR, BH] tile of out: BR gathered rows, one column tile of H.

  Refs: index [BR] int32, scale [BR] f32 (if has_scale), src [N, BH] (every row, one
  column tile), out [BR, BH].
  """
  if has_scale:
    scale_ref, src_ref, out_ref = refs
  else:
    (src_ref, out_ref), scale_ref = refs, None
  row_mask = _tiles.tail_mask(0, block_rows, num_rows)  # [BR] or None
  col_mask = _tiles.tail_mask(1, block_h, h)  # [BH] or None
  index = _tiles.load(index_ref, row_mask, -1)  # [BR]
  valid, rows = _tiles.safe_rows(index, num_src_rows)
  x = _tiles.gather_tile(src_ref, rows, valid, col_mask, block_h)  # [BR, BH]
  if scale_ref is not None:
    scale = _tiles.load(scale_ref, row_mask, 0.0)  # [BR] f32
    x = (x.astype(jnp.float32) * scale[:, None]).astype(out_ref.dtype)
    # A NaN or inf scale must not leak into an empty slot (0 * inf).
    x = jnp.where(valid[:, None], x, jnp.zeros((), x.dtype))
  _tiles.store(out_ref, x, _tiles.outer_and(row_mask, col_mask))


@functools.partial(jax.jit, static_argnames=("config", "interpret"))
def gather_rows(
    src: jax.Array,
    index: jax.Array,
    scale: jax.Array | None = None,
    *,
    config: BlockConfig,
    interpret: bool,
) -> jax.Array:
  """Builds and runs the gather kernel; inputs are validated by the API.

  Args:
    src: [N, H], N >= 1.
    index: [R] int32, R >= 1.
    scale: optional [R] float32.
    config: tile sizes; block_h need not divide H nor block_rows R.
    interpret: run the kernel body in the Pallas interpreter (CPU, tests).

  Returns:
    [R, H] of src.dtype.
  """
  num_src_rows, h = src.shape
  (num_rows,) = index.shape
  br, bh = config.block_rows, config.block_h
  grid = (pl.cdiv(num_rows, br), pl.cdiv(h, bh))
  row_spec = pl.BlockSpec((br,), lambda i, j: (i,))
  # The whole source column tile: the kernel picks its rows by index.
  src_spec = pl.BlockSpec((num_src_rows, bh), lambda i, j: (0, j))
  operands = [index] + ([scale] if scale is not None else []) + [src]
  in_specs = [row_spec] + ([row_spec] if scale is not None else []) + [src_spec]
  kernel = functools.partial(
      _kernel,
      has_scale=scale is not None,
      num_rows=num_rows,
      num_src_rows=num_src_rows,
      h=h,
      block_rows=br,
      block_h=bh,
  )
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_rows, h), src.dtype),
      grid=grid,
      in_specs=in_specs,
      out_specs=pl.BlockSpec((br, bh), lambda i, j: (i, j)),
      compiler_params=_compat.triton_compiler_params(
          num_warps=config.num_warps, num_stages=config.num_stages
      ),
      interpret=interpret,
      name=KERNEL_NAME,
  )(*operands)
