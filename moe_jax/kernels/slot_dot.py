"""Pallas (Triton) kernel for `slot_dots`: out[t, k] = dot(src[index[t, k]], g[t]).

The reduction over H is split: program (i, j) writes the partial dots of token tile
i over column tile j to partials[j], and XLA sums the partials afterwards. That gives
T/BT * H/BH programs (enough to fill the GPU even for small T), no atomics, and one
fixed summation order.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels.block_config import BlockConfig, next_power_of_two

KERNEL_NAME = "moe_slot_dots"
# The launch order (`_tiles.Order`): rows first; column-first measured no faster
# (-0.3% to +2.7%; bench/results/nvidia-h200/row-order/).
COLUMNS_FASTEST = False


def _kernel(
    index_ref,
    g_ref,
    src_ref,
    out_ref,
    *,
    num_tokens: int,
    num_src_rows: int,
    h: int,
    top_k: int,
    block_tokens: int,
    block_h: int,
    columns_fastest: bool,
):
  """Partial dots of one [BT, BH] tile.

  Refs: index [BT, K] int32, g [BT, BH], src [N, BH] (every row, one column tile),
  out [BT, Kp] f32 with Kp = next_pow2(K) (columns >= K stay 0 and are sliced off).
  """
  padded_k = out_ref.shape[-1]
  order = _tiles.Order(columns_fastest)
  row_mask = _tiles.tail_mask(order.row_axis, block_tokens, num_tokens)  # [BT] or None
  col_mask = _tiles.tail_mask(order.col_axis, block_h, h)  # [BH] or None
  g = _tiles.load(g_ref, _tiles.outer_and(row_mask, col_mask), 0)  # [BT, BH]
  g = g.astype(jnp.float32)
  slot = jnp.arange(padded_k, dtype=jnp.int32)[None, :]  # [1, Kp]
  out = jnp.zeros((block_tokens, padded_k), jnp.float32)
  for k in range(top_k):  # static K, unrolled
    index = _tiles.load(index_ref.at[:, jnp.int32(k)], row_mask, -1)  # [BT]
    valid, rows = _tiles.safe_rows(index, num_src_rows)
    x = _tiles.gather_tile(src_ref, rows, valid, col_mask, block_h).astype(jnp.float32)
    dots = jnp.sum(x * g, axis=1)  # [BT]
    # An empty slot is 0 even where g holds inf (0 * inf).
    dots = jnp.where(valid, dots, 0.0)
    out = jnp.where(slot == k, dots[:, None], out)  # column k of [BT, Kp]
  _tiles.store(out_ref, out, None if row_mask is None else row_mask[:, None])


@functools.partial(jax.jit, static_argnames=("config", "interpret", "columns_fastest"))
def slot_dots(
    src: jax.Array,
    index: jax.Array,
    g: jax.Array,
    *,
    config: BlockConfig,
    interpret: bool,
    columns_fastest: bool = COLUMNS_FASTEST,
) -> jax.Array:
  """Builds and runs the slot-dot kernel and sums its per-column-tile partials.

  Args:
    src: [N, H], N >= 1.
    index: [T, K] int32, T >= 1, K >= 1.
    g: [T, H].
    config: tiles of [T, H]; block_h need not divide H nor block_rows T.
    interpret: run the kernel body in the Pallas interpreter (CPU, tests).
    columns_fastest: the launch order (`_tiles.Order`).

  Returns:
    [T, K] float32.
  """
  num_src_rows, h = src.shape
  num_tokens, top_k = index.shape
  padded_k = next_power_of_two(top_k)
  bt, bh = config.block_rows, config.block_h
  num_h_tiles = pl.cdiv(h, bh)
  order = _tiles.Order(columns_fastest)
  kernel = functools.partial(
      _kernel,
      num_tokens=num_tokens,
      num_src_rows=num_src_rows,
      h=h,
      top_k=top_k,
      block_tokens=bt,
      block_h=bh,
      columns_fastest=columns_fastest,
  )
  partials = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_h_tiles, num_tokens, padded_k), jnp.float32),
      grid=order.grid(pl.cdiv(num_tokens, bt), num_h_tiles),
      in_specs=[
          order.spec((bt, top_k), lambda i, j: (i, 0)),
          order.spec((bt, bh), lambda i, j: (i, j)),
          order.spec((num_src_rows, bh), lambda i, j: (0, j)),
      ],
      out_specs=order.spec((_compat.SQUEEZED, bt, padded_k), lambda i, j: (j, i, 0)),
      compiler_params=_compat.triton_compiler_params(
          num_warps=config.num_warps, num_stages=config.num_stages
      ),
      interpret=interpret,
      name=KERNEL_NAME,
  )(index, g, src)  # [H/BH, T, Kp]
  return jnp.sum(partials, axis=0)[:, :top_k]
