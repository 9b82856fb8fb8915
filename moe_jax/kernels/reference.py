"""Pure-jnp row primitives: what each op means, the "xla" implementation, the oracle.

Shapes: src [N, H]; gather index [R]; combine / slot_dots index [T, K]. An index < 0
is an empty slot (it reads nothing and contributes exactly 0); an index >= N reads
row N-1, as the kernels do (they clamp so that no address leaves the source).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _rows(src: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(valid, src[clamped index]); valid = index >= 0, shape of index."""
  valid = index >= 0
  safe = jnp.where(valid, jnp.minimum(index, src.shape[0] - 1), 0)
  return valid, jnp.take(src, safe, axis=0)


def gather_rows(src: jax.Array, index: jax.Array, scale: jax.Array | None = None) -> jax.Array:
  """out[r] = src[index[r]] (* scale[r] in f32), 0 where index[r] < 0.

  Args:
    src: [N, H], N >= 1.
    index: [R] int32.
    scale: optional [R] float32.

  Returns:
    [R, H] of src.dtype.
  """
  valid, rows = _rows(src, index)  # [R], [R, H]
  if scale is not None:
    rows = (rows.astype(jnp.float32) * scale.astype(jnp.float32)[:, None]).astype(src.dtype)
  return jnp.where(valid[:, None], rows, jnp.zeros((), src.dtype))


def scatter_targets(dest: jax.Array, num_rows: int) -> jax.Array:
  """dest with every entry outside [0, R) replaced by R, which a `mode="drop"` scatter
  into R rows ignores (a plain negative index would wrap around)."""
  return jnp.where((dest >= 0) & (dest < num_rows), dest, num_rows)


def scatter_rows(src: jax.Array, dest: jax.Array, scale: jax.Array | None = None, *,
                 num_rows: int) -> jax.Array:
  """out[dest[t, k]] = src[t] (* scale[t, k] in f32); rows no slot targets are 0.

  Args:
    src: [T, H].
    dest: [T, K] int32, entries in [0, R) distinct; others write nothing.
    scale: optional [T, K] float32.
    num_rows: R.

  Returns:
    [R, H] of src.dtype.
  """
  num_tokens, top_k = dest.shape
  rows = jnp.broadcast_to(src[:, None, :], (num_tokens, top_k, src.shape[1]))
  if scale is not None:
    rows = (rows.astype(jnp.float32) * scale.astype(jnp.float32)[..., None]).astype(src.dtype)
  target = scatter_targets(dest, num_rows).reshape(-1)
  out = jnp.zeros((num_rows, src.shape[1]), src.dtype)
  return out.at[target].set(rows.reshape(-1, src.shape[1]), mode="drop")


def combine_rows(
    src: jax.Array,
    index: jax.Array,
    weight: jax.Array | None = None,
    *,
    out_dtype: jnp.dtype | None = None,
    bias: jax.Array | None = None,
    bias_index: jax.Array | None = None,
) -> jax.Array:
  """out[t] = sum_k weight[t, k] * (src[index[t, k]] + bias[bias_index[t, k]]), in f32.

  k = 0..K-1 in order.

  Args:
    src: [N, H], N >= 1.
    index: [T, K] int32; slots with index < 0 contribute exactly 0 (bias included).
    weight: optional [T, K] float32 (None means 1).
    out_dtype: output dtype, src.dtype when None.
    bias: optional [B, H] rows added to each slot's source row before the weight.
    bias_index: [T, K] int32 bias row of each slot (given with bias); < 0: none.

  Returns:
    [T, H] of out_dtype.
  """
  num_tokens, top_k = index.shape
  acc = jnp.zeros((num_tokens, src.shape[1]), jnp.float32)  # [T, H]
  for k in range(top_k):
    valid, rows = _rows(src, index[:, k])  # [T], [T, H]
    x = rows.astype(jnp.float32)
    if bias is not None:
      has_bias, b = _rows(bias, bias_index[:, k])  # [T], [T, H]
      x = x + jnp.where(has_bias[:, None], b.astype(jnp.float32), 0.0)
    x = jnp.where(valid[:, None], x, 0.0)
    if weight is not None:
      w = jnp.where(valid, weight[:, k].astype(jnp.float32), 0.0)  # [T]
      x = w[:, None] * x
    acc = acc + x
  return acc.astype(out_dtype or src.dtype)


def slot_dots(src: jax.Array, index: jax.Array, g: jax.Array) -> jax.Array:
  """out[t, k] = dot(src[index[t, k]], g[t]) in f32, 0 where index[t, k] < 0.

  The product is taken elementwise in f32 and summed, never through a matmul that
  the backend could run in TF32.

  Args:
    src: [N, H], N >= 1.
    index: [T, K] int32.
    g: [T, H].

  Returns:
    [T, K] float32.
  """
  valid, rows = _rows(src, index)  # [T, K], [T, K, H]
  prod = rows.astype(jnp.float32) * g.astype(jnp.float32)[:, None, :]
  return jnp.where(valid, jnp.sum(prod, axis=-1), 0.0)


def group_tiles(tile_group: jax.Array, num_groups: int) -> jax.Array:
  """[E] int32 number of tiles of each group (tiles with group < 0 count for none)."""
  return jnp.sum(tile_group[None, :] == jnp.arange(num_groups, dtype=jnp.int32)[:, None],
                 axis=1, dtype=jnp.int32)


def _group_rows(tile_group: jax.Array, num_rows: int, num_groups: int) -> jax.Array:
  """[E] rows of each group: its tile count times the tile height."""
  return group_tiles(tile_group, num_groups) * (num_rows // tile_group.shape[0])


def gmm(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array, *, transpose_rhs: bool = False,
        out_dtype=None, precision=None) -> jax.Array:
  """out[r] = lhs[r] @ rhs[group(r)] (rhs[group(r)].T if transpose_rhs); 0 for no group.

  `lax.ragged_dot` over the tile layout, so tiles must be sorted by group with the
  group-less tiles last (the dispatch lays them out so).

  Args:
    lhs: [R, K]; rhs: [E, K, N] ([E, N, K] if transpose_rhs); tile_group: [R/TM] int32.

  Returns:
    [R, N] of out_dtype (lhs.dtype when None), accumulated in float32.
  """
  if transpose_rhs:
    rhs = jnp.swapaxes(rhs, 1, 2)
  sizes = _group_rows(tile_group, lhs.shape[0], rhs.shape[0])
  out = jax.lax.ragged_dot(lhs, rhs.astype(lhs.dtype), sizes, precision=precision,
                           preferred_element_type=jnp.float32)
  return out.astype(out_dtype or lhs.dtype)


def tgmm(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array, *, num_groups: int,
         out_dtype=None, precision=None) -> jax.Array:
  """out[e] = sum over the rows r of group e of lhs[r].T @ rhs[r] -> [E, K, N].

  `lax.ragged_dot_general` with the rows as a ragged contracting dimension; tiles
  sorted by group as for `gmm`.

  Args:
    lhs: [R, K]; rhs: [R, N]; tile_group: [R/TM] int32; num_groups: E.

  Returns:
    [E, K, N] of out_dtype (lhs.dtype when None), accumulated in float32.
  """
  sizes = _group_rows(tile_group, lhs.shape[0], num_groups)
  dims = jax.lax.RaggedDotDimensionNumbers(
      dot_dimension_numbers=(([0], [0]), ([], [])), lhs_ragged_dimensions=[0],
      rhs_group_dimensions=[])
  out = jax.lax.ragged_dot_general(lhs, rhs.astype(lhs.dtype), sizes, dims,
                                   precision=precision, preferred_element_type=jnp.float32)
  return out.astype(out_dtype or lhs.dtype)
