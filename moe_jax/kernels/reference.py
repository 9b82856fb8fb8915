"""Pure-jnp kernels' ops: what each op means, the "xla" implementation, the oracle.

Shapes: src [N, H]; gather index [R]; combine / slot_dots index [T, K]. An index < 0
is an empty slot (it reads nothing and contributes exactly 0); an index >= N reads
row N-1, as the kernels do (they clamp so that no address leaves the source). The
grouped matmuls, the bias + GLU (`tile_glu`, `tile_glu_grad`) and `gmm_glu` (the
up-projection and its GLU in one) take the tile layout: rows in tiles of
TM = R / num_tiles, each tile one group (expert) or none (< 0).
"""
from __future__ import annotations

from typing import NamedTuple

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
    lhs: jax.Array | None = None,
    rhs: jax.Array | None = None,
) -> jax.Array:
  """out[t] = sum_k weight[t, k] * (src[index[t, k]] + bias[bias_index[t, k]])
  (+ (lhs @ rhs)[t]), in f32.

  k = 0..K-1 in order; the product, if any, is added last, at f32 precision.

  Args:
    src: [N, H], N >= 1.
    index: [T, K] int32; slots with index < 0 contribute exactly 0 (bias included).
    weight: optional [T, K] float32 (None means 1).
    out_dtype: output dtype, src.dtype when None.
    bias: optional [B, H] rows added to each slot's source row before the weight.
    bias_index: [T, K] int32 bias row of each slot (given with bias); < 0: none.
    lhs, rhs: optional [T, E] and [E, H] (given together).

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
  if lhs is not None:
    acc = acc + matmul_term(lhs, rhs)
  return acc.astype(out_dtype or src.dtype)


def matmul_term(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """lhs @ rhs ([T, E] x [E, H]) in float32 at full precision (combine_rows' term)."""
  return jnp.dot(lhs.astype(jnp.float32), rhs.astype(jnp.float32),
                 precision=jax.lax.Precision.HIGHEST)


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


def top_k_softmax(logits: jax.Array, bias: jax.Array, top_k: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The GPT-OSS router after its GEMM: bias, top-K, softmax over the K values.

  Args:
    logits: [T, E] float32 router logits before the bias.
    bias: [E] float32.
    top_k: K.

  Returns:
    (logits + bias [T, E] f32; indices [T, K] int32 of the K largest in decreasing
    order, equal values in increasing index order, NaNs and signed zeros placed by
    IEEE total order as `lax.top_k` places them; weights [T, K] f32, their softmax).
  """
  z = logits + bias[None, :]  # [T, E]
  values, indices = jax.lax.top_k(z, top_k)  # [T, K]
  return z, indices.astype(jnp.int32), jax.nn.softmax(values, axis=-1)


def expert_ranks(expert_ids: jax.Array, num_experts: int) -> tuple[jax.Array, jax.Array]:
  """Each slot's stable rank among the slots of its expert, and each expert's count.

  Args:
    expert_ids: [M] int32 in [0, E).
    num_experts: E.

  Returns:
    (position [M] int32: how many earlier slots chose the same expert, counts [E] int32).
  """
  order, counts, sorted_position = _sort_slots(expert_ids, num_experts)
  # order is a permutation: the scatter writes each slot once.
  return jnp.zeros(order.shape[0], jnp.int32).at[order].set(sorted_position), counts


def _sort_slots(expert_ids: jax.Array, num_experts: int
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """([M] slot ids sorted by expert, stably; [E] counts; [M] each sorted slot's rank
  within its expert)."""
  order = jnp.argsort(expert_ids, stable=True)  # [M]
  counts = jnp.bincount(expert_ids, length=num_experts).astype(jnp.int32)  # [E]
  starts = jnp.cumsum(counts, dtype=jnp.int32) - counts  # [E]
  sorted_position = jnp.arange(order.shape[0], dtype=jnp.int32) - starts[expert_ids[order]]
  return order, counts, sorted_position


class GroupedLayout(NamedTuple):
  """Where every slot goes in the grouped (tile) layout; int32 arrays.

  Attributes:
    position: [M] each slot's stable rank among the slots of its expert.
    counts: [E] slots of each expert.
    sort_order: [M] slot ids sorted by expert, stably.
    sorted_experts: [M] the expert of each sorted slot.
    sorted_row: [M] the buffer row of each sorted slot, -1 if dropped.
    gather_slot: [R] the slot feeding each buffer row, -1 for empty rows.
    combine_index: [M] the buffer row of each slot (slot order), -1 if dropped.
    tile_expert: [num_tiles] each tile's expert, -1 for unused tiles (the last ones).
    tile_fill: [num_tiles] rows of each tile that hold a slot (its first ones).
  """
  position: jax.Array
  counts: jax.Array
  sort_order: jax.Array
  sorted_experts: jax.Array
  sorted_row: jax.Array
  gather_slot: jax.Array
  combine_index: jax.Array
  tile_expert: jax.Array
  tile_fill: jax.Array


def grouped_layout(expert_ids: jax.Array, num_experts: int, capacity: int | None,
                   tile_rows: int, num_tiles: int) -> GroupedLayout:
  """The grouped layout of the slots' experts: the counting sort, then each expert's
  first min(count, C) slots (all of them when capacity is None) in its own run of
  TM-row tiles, experts in order, each run starting on a tile boundary.

  Args:
    expert_ids: [M] int32 in [0, E).
    num_experts: E.
    capacity: C, or None (dropless).
    tile_rows: TM.
    num_tiles: static tile count, at least sum_e ceil(min(count_e, C) / TM).
  """
  m = expert_ids.shape[0]
  sort_order, counts, sorted_position = _sort_slots(expert_ids, num_experts)
  # sort_order is a permutation: the scatter writes each slot once.
  position = jnp.zeros(m, jnp.int32).at[sort_order].set(sorted_position)  # [M]
  sorted_experts = expert_ids[sort_order]
  kept = counts if capacity is None else jnp.minimum(counts, capacity)
  expert_tiles = (kept + tile_rows - 1) // tile_rows  # [E]
  tile_end = jnp.cumsum(expert_tiles, dtype=jnp.int32)  # [E]
  sorted_row = (tile_end - expert_tiles)[sorted_experts] * tile_rows + sorted_position  # [M]
  if capacity is not None:
    sorted_row = jnp.where(sorted_position < capacity, sorted_row, -1)
  num_rows = num_tiles * tile_rows
  # Dropped rows (-1) go out of bounds and are dropped, not wrapped to the last row.
  gather_slot = jnp.full(num_rows, -1, jnp.int32).at[
      jnp.where(sorted_row >= 0, sorted_row, num_rows)].set(sort_order, mode="drop")
  combine_index = jnp.zeros(m, jnp.int32).at[sort_order].set(sorted_row)
  t = jnp.arange(num_tiles, dtype=jnp.int32)
  tile_expert = jnp.sum(tile_end[None, :] <= t[:, None], axis=1, dtype=jnp.int32)
  tile_expert = jnp.where(tile_expert < num_experts, tile_expert, -1)  # [num_tiles]
  tile_fill = jnp.sum((gather_slot >= 0).reshape(num_tiles, tile_rows), axis=1,
                      dtype=jnp.int32)  # [num_tiles]
  return GroupedLayout(position, counts, sort_order, sorted_experts, sorted_row,
                       gather_slot, combine_index, tile_expert, tile_fill)


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


ACTIVATIONS = ("gpt_oss_glu", "swiglu")


def act_items(activation: str, alpha: float, limit: float) -> tuple:
  """`glu_pair`'s keywords as a hashable tuple (a jit static argument or a
  `nondiff_argnums` entry); `dict(...)` of it gives the keywords back."""
  return (("activation", activation), ("alpha", float(alpha)), ("limit", float(limit)))


def glu_pair(gate: jax.Array, up: jax.Array, *, activation: str, alpha: float = 1.702,
             limit: float = 7.0) -> jax.Array:
  """The GLU of split gate and up values (elementwise; f32 in, f32 out).

  "gpt_oss_glu": (clip(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit);
  "swiglu": silu(gate) * up.
  """
  if activation == "gpt_oss_glu":
    gate = jnp.minimum(gate, limit)
    up = jnp.clip(up, -limit, limit)
    return (up + 1.0) * (gate * jax.nn.sigmoid(alpha * gate))
  if activation == "swiglu":
    return jax.nn.silu(gate) * up
  raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def tile_bias(bias: jax.Array, tile_expert: jax.Array) -> jax.Array:
  """[E, F] bias -> the f32 bias of each tile [num_tiles, F], 0 on unused tiles (< 0)."""
  b = bias.astype(jnp.float32)
  return jnp.where((tile_expert >= 0)[:, None], b[jnp.maximum(tile_expert, 0)], 0.0)


def biased(h: jax.Array, bias: jax.Array, tile_expert: jax.Array) -> jax.Array:
  """h [R, F] + its tile's bias -> [num_tiles, TM, F] float32."""
  b = tile_bias(bias, tile_expert)  # [num_tiles, F]
  return h.astype(jnp.float32).reshape(b.shape[0], -1, h.shape[-1]) + b[:, None, :]


def _kept(tile_expert: jax.Array, tile_fill: jax.Array | None, tile_rows: int) -> jax.Array:
  """[num_tiles, TM or 1, 1] bool: rows of used tiles before their tile's fill."""
  keep = (tile_expert >= 0)[:, None, None]
  if tile_fill is None:
    return keep
  return keep & (jnp.arange(tile_rows, dtype=jnp.int32)[None, :] < tile_fill[:, None])[..., None]


def tile_glu(h: jax.Array, bias: jax.Array, tile_expert: jax.Array,
             tile_fill: jax.Array | None = None, *, activation: str, alpha: float = 1.702,
             limit: float = 7.0) -> jax.Array:
  """The GLU of h plus its tile's bias, in f32: [R, 2I] interleaved -> [R, I] of h's dtype.

  Args:
    h: [R, 2I], gate in even columns, up in odd ones; rows in tiles of R / num_tiles.
    bias: [E, 2I].
    tile_expert: [num_tiles] int32 expert of each tile, < 0 for an unused tile.
    tile_fill: optional [num_tiles] int32 rows of each tile that hold data; rows past it
      come out 0.

  Returns:
    [R, I] of h.dtype: 0 on unused tiles (whatever h holds there) and past the fill.
  """
  hb = biased(h, bias, tile_expert)  # [num_tiles, TM, 2I]
  a = glu_pair(hb[..., 0::2], hb[..., 1::2], activation=activation, alpha=alpha, limit=limit)
  a = jnp.where(_kept(tile_expert, tile_fill, hb.shape[1]), a, 0.0)
  return a.astype(h.dtype).reshape(h.shape[0], -1)


def gmm_glu(lhs: jax.Array, rhs: jax.Array, bias: jax.Array, tile_group: jax.Array,
            tile_fill: jax.Array | None = None, *, activation: str, alpha: float = 1.702,
            limit: float = 7.0, precision=None, return_h: bool = False
            ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """`tile_glu(gmm(lhs, rhs, tile_group), bias, ...)`: the grouped up-projection and its
  bias + GLU, [R, K] x [E, K, 2I] -> [R, I] of lhs's dtype. The products are rounded to
  lhs's dtype before the bias, as a stored h would be; return_h also returns them
  (h [R, 2I], as `gmm` gives it)."""
  h = gmm(lhs, rhs, tile_group, precision=precision)
  out = tile_glu(h, bias, tile_group, tile_fill, activation=activation, alpha=alpha,
                 limit=limit)
  return (out, h) if return_h else out


def tile_glu_grad(h: jax.Array, bias: jax.Array, g: jax.Array, tile_expert: jax.Array,
                  tile_fill: jax.Array | None = None, *, activation: str,
                  alpha: float = 1.702, limit: float = 7.0) -> tuple[jax.Array, jax.Array]:
  """The VJP of `tile_glu` with respect to h, and its per-tile column sums.

  Args:
    h, bias, tile_expert, tile_fill: as for `tile_glu`.
    g: [R, I] cotangent of its output.

  Returns:
    (dh [R, 2I] of h.dtype, interleaved as h and 0 wherever `tile_glu` outputs 0;
     sums [num_tiles, 2I] float32: each tile's column sums of dh as stored, from which
     the bias gradient is the per-expert total).
  """
  hb = biased(h, bias, tile_expert)  # [num_tiles, TM, 2I]
  num_tiles, tile_rows = hb.shape[:2]
  g = g.astype(jnp.float32).reshape(num_tiles, tile_rows, -1)
  keep = _kept(tile_expert, tile_fill, tile_rows)
  g = jnp.where(keep, g, 0.0)
  # The VJP of the interleaved GLU: its backward writes dh interleaved, in one fusion.
  def glu(x):
    return glu_pair(x[..., 0::2], x[..., 1::2], activation=activation, alpha=alpha,
                    limit=limit)

  _, vjp = jax.vjp(glu, hb)
  (dh,) = vjp(g)
  dh = jnp.where(keep, dh, 0.0).astype(h.dtype)  # 0 even where h is not finite
  # The barrier keeps dh written once and reduced, rather than the GLU's backward
  # recomputed in a second fusion for the sums (bench/NOTES.md, variant 12).
  dh = jax.lax.optimization_barrier(dh)
  sums = dh.astype(jnp.float32).sum(axis=1)  # [num_tiles, 2I]
  return dh.reshape(h.shape), sums


def split_terms(x: jax.Array, dtype) -> tuple[jax.Array, ...]:
  """x (f32) as one or two terms of `dtype` whose sum is x to ~2^-17 relative (one
  term for float32)."""
  x = x.astype(jnp.float32)
  hi = x.astype(dtype)
  if jnp.dtype(dtype) == jnp.float32:
    return (hi,)
  return hi, (x - hi.astype(jnp.float32)).astype(dtype)


def dot_f32(a_terms, b, **kwargs) -> jax.Array:
  """sum of a_i . b accumulated in f32 (bf16 operands: exact products on tensor cores)."""
  dot = lambda a: jnp.dot(a, b, preferred_element_type=jnp.float32, **kwargs)
  out = dot(a_terms[0])
  for a in a_terms[1:]:
    out = out + dot(a)
  return out
