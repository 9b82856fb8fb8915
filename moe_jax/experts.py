"""Expert MLPs: interleaved gate/up projection, GLU, down projection, biases.

Matmuls accumulate in float32. In float32 their outputs stay float32; in bf16 they
come out in bf16 (as torch's do), which halves the [rows, 2I] intermediate and keeps
the weight gradients in the parameter dtype instead of float32. Biases and the GLU run
in float32 on the upcast values; the GLU's output is cast to the compute dtype before
the down projection. The down bias belongs before the routing weight multiplies a row
(as GPT-OSS adds it); the experts add it per row when given one, while the layer
passes None and lets the combine add it (`binned_scatter(bias=...)`), which saves a
pass over the [R, H] output.

Binned experts are two batched einsums over the padded [E, C, H]. Dropless experts
are two grouped matmuls (`kernels.gmm`, with a custom VJP over `gmm`/`tgmm`) over the
grouped tile layout of `moe_jax.dispatch`, which binned mode may use too; the first
and the bias + GLU run as one op (`grouped_glu`, `kernels.gmm_glu`), whose training
forward also saves what its custom VJP needs.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from moe_jax import kernels
from moe_jax.kernels import reference


def _check_weights(h: int, gate_up_proj, gate_up_proj_bias, down_proj, down_proj_bias,
                   num_experts: int | None = None) -> None:
  """Static shape checks of the expert weights against rows of width H: one ValueError
  naming every argument whose shape is wrong."""
  if gate_up_proj.ndim != 3:
    raise ValueError(f"gate_up_proj must have shape [E, H={h}, 2I], got shape "
                     f"{gate_up_proj.shape}")
  e = gate_up_proj.shape[0] if num_experts is None else num_experts
  # 2I as most of the weights give it (gate_up_proj's on a tie), so that the error
  # names the odd one out rather than the two that agree.
  votes = [gate_up_proj.shape[-1]]
  if gate_up_proj_bias is not None and gate_up_proj_bias.ndim == 2:
    votes.append(gate_up_proj_bias.shape[-1])
  if down_proj is not None and down_proj.ndim == 3:
    votes.append(2 * down_proj.shape[1])
  two_i = max(votes, key=votes.count)
  want = dict(gate_up_proj=(e, h, two_i), gate_up_proj_bias=(e, two_i),
              down_proj=(e, two_i // 2, h), down_proj_bias=(e, h))
  got = dict(gate_up_proj=gate_up_proj, gate_up_proj_bias=gate_up_proj_bias,
             down_proj=down_proj, down_proj_bias=down_proj_bias)
  problems = [f"{name} must have shape {want[name]} ([E, H, 2I], [E, 2I], [E, I, H], [E, H] "
              f"with H={h} of the rows), got {tuple(w.shape)}"
              for name, w in got.items() if w is not None and tuple(w.shape) != want[name]]
  if gate_up_proj.shape[-1] % 2:
    problems.insert(0, f"gate_up_proj's last dimension must be 2I (even: gate and up "
                       f"interleaved), got {gate_up_proj.shape[-1]}")
  if problems:
    raise ValueError("bad expert weights: " + "; ".join(problems))


def _dot_dtype(dtype) -> jnp.dtype:
  """The matmul output dtype: float32 for float32 compute, else the compute dtype."""
  return jnp.dtype(jnp.float32) if dtype == jnp.float32 else jnp.dtype(dtype)


def glu(gate_up: jax.Array, *, activation: str, alpha: float = 1.702, limit: float = 7.0) -> jax.Array:
  """[..., 2I] interleaved (gate even, up odd) -> [..., I]."""
  if gate_up.ndim < 1 or gate_up.shape[-1] % 2:
    raise ValueError(f"gate_up must have an even last dimension 2I (gate and up "
                     f"interleaved), got shape {gate_up.shape}")
  return reference.glu_pair(gate_up[..., 0::2], gate_up[..., 1::2], activation=activation,
                            alpha=alpha, limit=limit)


def binned_experts(buf: jax.Array, gate_up_proj: jax.Array, gate_up_proj_bias: jax.Array,
                   down_proj: jax.Array, down_proj_bias: jax.Array | None, *, activation: str,
                   alpha: float = 1.702, limit: float = 7.0,
                   precision: jax.lax.Precision | None = None) -> jax.Array:
  """Runs every expert on its [C, H] bin.

  Args:
    buf: [E, C, H].
    gate_up_proj: [E, H, 2I]; gate_up_proj_bias: [E, 2I].
    down_proj: [E, I, H]; down_proj_bias: [E, H], or None to leave it to the combine.

  Returns:
    [E, C, H] in buf's dtype, down bias included when given, not yet weighted.
  """
  if buf.ndim != 3:
    raise ValueError(f"buf must have shape [E, C, H], got shape {buf.shape}")
  _check_weights(buf.shape[2], gate_up_proj, gate_up_proj_bias, down_proj, down_proj_bias,
                 num_experts=buf.shape[0])
  dtype = buf.dtype
  h = jnp.einsum("ech,ehf->ecf", buf, gate_up_proj.astype(dtype), precision=precision,
                 preferred_element_type=_dot_dtype(dtype))  # [E, C, 2I]
  a = bias_glu(h, gate_up_proj_bias, None, activation=activation, alpha=alpha,
               limit=limit, implementation="xla")  # [E, C, I]
  out = jnp.einsum("eci,eih->ech", a, down_proj.astype(dtype), precision=precision,
                   preferred_element_type=_dot_dtype(dtype))  # [E, C, H]
  return out if down_proj_bias is None else add_tile_bias(out, down_proj_bias, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _grouped_linear(x, w, tile_expert, tile_fill, precision, implementation, zero_unused):
  return kernels.gmm(x, w, tile_expert, out_dtype=_dot_dtype(x.dtype), precision=precision,
                     implementation=implementation, zero_unused=zero_unused)


def _grouped_linear_fwd(x, w, tile_expert, tile_fill, precision, implementation, zero_unused):
  out = _grouped_linear(x, w, tile_expert, tile_fill, precision, implementation, zero_unused)
  return out, (x, w, tile_expert, tile_fill)


def _grouped_linear_bwd(precision, implementation, zero_unused, res, g):
  x, w, tile_expert, tile_fill = res
  g = g.astype(x.dtype)
  lin = dict(precision=precision, implementation=implementation)
  dx = kernels.gmm(g, w, tile_expert, transpose_rhs=True, out_dtype=x.dtype,
                   zero_unused=zero_unused, **lin)  # [R, K]
  # x is zero past each tile's fill, so those rows add nothing to dw: tgmm skips them.
  dw = kernels.tgmm(x, g, tile_expert, num_groups=w.shape[0], out_dtype=w.dtype,
                    tile_fill=tile_fill, **lin)  # [E, K, N]
  return dx, dw, None, None


_grouped_linear.defvjp(_grouped_linear_fwd, _grouped_linear_bwd)


def grouped_linear(x: jax.Array, w: jax.Array, tile_expert: jax.Array, *,
                   tile_fill: jax.Array | None = None,
                   precision: jax.lax.Precision | None = None,
                   implementation: str | None = None, zero_unused: bool = True) -> jax.Array:
  """Differentiable grouped matmul over row tiles: x [R, K] @ w[tile_expert] -> [R, N].

  forward `gmm`; backward dx = `gmm` with w transposed, dw = `tgmm`: the same
  kernels serve "xla" (ragged_dot) and "pallas". Output in `_dot_dtype(x.dtype)`.
  tile_fill ([num_tiles] int32, optional): rows of each tile that hold data; x must
  be zero past it, so that the weight gradient's `tgmm` may skip those rows.
  zero_unused: as for `kernels.gmm`, for the output and for dx (False: their unused
  tiles' rows may hold anything).
  """
  return _grouped_linear(x, w.astype(x.dtype), tile_expert, tile_fill, precision,
                         implementation, bool(zero_unused))


def _tiles_to_experts(tile_sums: jax.Array, tile_expert: jax.Array | None,
                      num_experts: int) -> jax.Array:
  """Sums per-tile rows [num_tiles, F] f32 into their experts: [E, F] f32.

  A one-hot [E, num_tiles] product at full f32 precision, not a scatter-add: XLA
  fuses a scatter with the row reduction that feeds it into one slow atomic kernel
  over all R rows (0.33 ms for gpt-oss-20b's [R, 2I], `bench/NOTES.md` variant 12),
  while a dense producer keeps the reduction a plain, fusible reduce.
  """
  if tile_expert is None:
    return tile_sums
  onehot = (tile_expert[None, :] == jnp.arange(num_experts)[:, None]).astype(jnp.float32)
  return jnp.dot(onehot, tile_sums, precision=jax.lax.Precision.HIGHEST)


def _check_tile_bias(name: str, h: jax.Array, bias: jax.Array,
                     tile_expert: jax.Array | None) -> None:
  """Static shape checks of bias_glu / add_tile_bias, naming the argument at fault."""
  if bias.ndim != 2 or bias.shape[1] != h.shape[-1]:
    raise ValueError(f"{name}: bias must be [E, {h.shape[-1]}] (h's last dimension), "
                     f"got shape {bias.shape}")
  if tile_expert is None:
    if h.ndim != 3 or h.shape[0] != bias.shape[0]:
      raise ValueError(f"{name}: with tile_expert=None, h must be [E={bias.shape[0]}, C, F], "
                       f"got shape {h.shape}")
    return
  if tile_expert.ndim != 1 or h.ndim != 2 or h.shape[0] % max(1, tile_expert.shape[0]):
    raise ValueError(f"{name}: h must be [R, F] with R a multiple of tile_expert's length, "
                     f"got h {h.shape} and tile_expert {tile_expert.shape}")


def _as_tiles(h: jax.Array, tile_expert: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """(h as [R, F], tile_expert): bins [E, C, F] are E tiles of C rows, tile e expert e."""
  if tile_expert is not None:
    return h, tile_expert
  return h.reshape(-1, h.shape[-1]), jnp.arange(h.shape[0], dtype=jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _bias_glu(h, bias, tile_expert, tile_fill, act, implementation):
  rows, tiles = _as_tiles(h, tile_expert)
  a = kernels.tile_glu(rows, bias, tiles, tile_fill, implementation=implementation, **dict(act))
  return a.reshape(*h.shape[:-1], a.shape[-1])


def _bias_glu_fwd(h, bias, tile_expert, tile_fill, act, implementation):
  # The residual is h itself, which the matmul wrote anyway; autodiff of the plain
  # expression would save the f32 biased [R, 2I] (twice h's bytes in bf16).
  out = _bias_glu(h, bias, tile_expert, tile_fill, act, implementation)
  return out, (h, bias, tile_expert, tile_fill)


def _bias_glu_bwd(act, implementation, res, g, zero_unused=True):
  h, bias, tile_expert, tile_fill = res
  rows, tiles = _as_tiles(h, tile_expert)
  g_h, sums = kernels.tile_glu_grad(rows, bias, g.reshape(rows.shape[0], -1), tiles, tile_fill,
                                    implementation=implementation, zero_unused=zero_unused,
                                    **dict(act))
  # The bias gradient sums dh as stored (h's dtype, as torch's autograd does), in f32.
  d_bias = _tiles_to_experts(sums, tile_expert, bias.shape[0])
  return g_h.reshape(h.shape), d_bias.astype(bias.dtype), None, None


_bias_glu.defvjp(_bias_glu_fwd, _bias_glu_bwd)


def bias_glu(h: jax.Array, bias: jax.Array, tile_expert: jax.Array | None, *, activation: str,
             alpha: float = 1.702, limit: float = 7.0, tile_fill: jax.Array | None = None,
             implementation: str | None = None) -> jax.Array:
  """GLU of h plus its tile's bias, in f32, cast back to h's dtype (`kernels.tile_glu`).

  Args:
    h: [R, 2I] grouped rows (tiles of R / num_tiles rows) or [E, C, 2I] bins.
    bias: [E, 2I].
    tile_expert: [num_tiles] int32 expert of each row tile (< 0: unused, output 0), or
      None when tile e is expert e (binned).
    tile_fill: optional [num_tiles] int32 rows of each tile that hold data; the output
      is 0 past it (glu(bias) otherwise), so that a weight gradient's `tgmm` may skip
      those rows whatever the cotangent.
    implementation: "xla", "pallas" (the GLU kernels, which skip unused tiles) or None
      for the best on this backend.

  Returns:
    [..., I] in h's dtype. Its VJP saves only h and recomputes the rest; the bias
    gradient comes from the gradient kernel's per-tile column sums.
  """
  _check_tile_bias("bias_glu", h, bias, tile_expert)
  if h.shape[-1] % 2:
    raise ValueError(f"bias_glu: h's last dimension must be even (2I), got shape {h.shape}")
  act = reference.act_items(activation, alpha, limit)
  return _bias_glu(h, bias, tile_expert, tile_fill, act, implementation)


@jax.custom_vjp
def _add_tile_bias(h, bias, tile_expert):
  rows, tiles = _as_tiles(h, tile_expert)
  return reference.biased(rows, bias, tiles).reshape(h.shape).astype(h.dtype)


def _add_tile_bias_fwd(h, bias, tile_expert):
  return _add_tile_bias(h, bias, tile_expert), (bias, tile_expert)


def _add_tile_bias_bwd(res, g):
  bias, tile_expert = res
  num_tiles = bias.shape[0] if tile_expert is None else tile_expert.shape[0]
  sums = g.astype(jnp.float32).reshape(num_tiles, -1, g.shape[-1]).sum(axis=1)
  d_bias = _tiles_to_experts(sums, tile_expert, bias.shape[0])
  return g, d_bias.astype(bias.dtype), None


_add_tile_bias.defvjp(_add_tile_bias_fwd, _add_tile_bias_bwd)


def add_tile_bias(h: jax.Array, bias: jax.Array, tile_expert: jax.Array | None) -> jax.Array:
  """h [R, F] (or [E, C, F]) + its tile's bias [E, F], added in f32, in h's dtype.

  The bias is broadcast per tile, never materialised per row; tile_expert as in
  `bias_glu`. The VJP sums the gradient per tile, then per expert.
  """
  _check_tile_bias("add_tile_bias", h, bias, tile_expert)
  return _add_tile_bias(h, bias, tile_expert)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _grouped_glu(x, w, bias, tile_expert, tile_fill, precision, act, implementation,
                 zero_unused):
  return kernels.gmm_glu(x, w, bias, tile_expert, tile_fill, precision=precision,
                         implementation=implementation, zero_unused=zero_unused, **dict(act))


def _grouped_glu_fwd(x, w, bias, tile_expert, tile_fill, precision, act, implementation,
                     zero_unused):
  # Differentiated, the fused op also returns h, the residual of the GLU's backward.
  a, h = kernels.gmm_glu(x, w, bias, tile_expert, tile_fill, precision=precision,
                         implementation=implementation, return_h=True,
                         zero_unused=zero_unused, **dict(act))
  return a, ((x, w, tile_expert, tile_fill), (h, bias, tile_expert, tile_fill))


def _grouped_glu_bwd(precision, act, implementation, zero_unused, res, g):
  lin_res, glu_res = res
  g_h, d_bias, _, _ = _bias_glu_bwd(act, implementation, glu_res, g, zero_unused)
  dx, dw, _, _ = _grouped_linear_bwd(precision, implementation, zero_unused, lin_res, g_h)
  return dx, dw, d_bias, None, None


_grouped_glu.defvjp(_grouped_glu_fwd, _grouped_glu_bwd)


def grouped_glu(x: jax.Array, w: jax.Array, bias: jax.Array, tile_expert: jax.Array, *,
                activation: str, alpha: float = 1.702, limit: float = 7.0,
                tile_fill: jax.Array | None = None,
                precision: jax.lax.Precision | None = None,
                implementation: str | None = None, zero_unused: bool = True) -> jax.Array:
  """`bias_glu(grouped_linear(x, w), bias)` over the tile layout: [R, K] -> [R, I].

  One op (`kernels.gmm_glu`: on a Hopper GPU one kernel). Called without
  differentiation the [R, 2I] products stay on chip; differentiated, the same op also
  writes them (`return_h=True`) and saves them for the backward, which is
  `bias_glu`'s then `grouped_linear`'s. Same values either way. zero_unused: as for
  `grouped_linear`, and for the GLU gradient's dh (`kernels.tile_glu_grad`).
  """
  _check_tile_bias("grouped_glu", jax.ShapeDtypeStruct((x.shape[0], w.shape[-1]), x.dtype),
                   bias, tile_expert)
  act = reference.act_items(activation, alpha, limit)
  return _grouped_glu(x, w.astype(x.dtype), bias, tile_expert, tile_fill, precision, act,
                      implementation, bool(zero_unused))


def dropless_experts(rows: jax.Array, tile_expert: jax.Array, gate_up_proj: jax.Array,
                     gate_up_proj_bias: jax.Array, down_proj: jax.Array,
                     down_proj_bias: jax.Array | None, *, tile_fill: jax.Array | None = None,
                     activation: str, alpha: float = 1.702, limit: float = 7.0,
                     precision: jax.lax.Precision | None = None,
                     implementation: str | None = None,
                     zero_unused: bool = True) -> jax.Array:
  """Runs the experts over the grouped tile layout with grouped matmuls.

  The layout of `moe_jax.dispatch`'s grouped mode: dropless, or binned with each
  expert's kept slots only.

  Args:
    rows: [R, H] expert-sorted rows in tiles of TM = R / num_tiles rows (empty rows 0).
    tile_expert: [num_tiles] expert of each tile, -1 for unused tiles.
    tile_fill: optional [num_tiles] rows of each tile that hold a slot
      (`DispatchMeta.tile_fill`); rows past it must be empty (0). Given, the GLU's
      output is zeroed on empty rows too (glu(bias) otherwise), so that the weight
      gradients' `tgmm` may skip them whatever the cotangent.
    implementation: "xla" (ragged_dot), "pallas" (the Pallas grouped matmul) or None.
    down_proj_bias: [E, H], or None to leave it to the combine.
    zero_unused: False lets the grouped matmuls and the GLU's gradient leave the unused
      tiles' rows of their outputs and input gradients unwritten (`kernels.gmm`,
      `kernels.tile_glu_grad`), for a caller that never reads those rows (the layer:
      its combine and pack read slots' rows only). Needs down_proj_bias None: the
      bias's gradient sums whole tiles.

  Returns:
    [R, H] in rows' dtype, down bias included when given (also on empty rows of
    used tiles, which nothing reads).
  """
  if rows.ndim != 2:
    raise ValueError(f"rows must have shape [R, H], got shape {rows.shape}")
  _check_weights(rows.shape[1], gate_up_proj, gate_up_proj_bias, down_proj, down_proj_bias)
  if not zero_unused and down_proj_bias is not None:
    raise ValueError("zero_unused=False needs down_proj_bias=None (its gradient sums every "
                     "row of each tile), got a down_proj_bias")
  lin = dict(tile_fill=tile_fill, precision=precision, implementation=implementation,
             zero_unused=zero_unused)
  a = grouped_glu(rows, gate_up_proj, gate_up_proj_bias, tile_expert, activation=activation,
                  alpha=alpha, limit=limit, **lin)  # [R, I]
  out = grouped_linear(a, down_proj, tile_expert, **lin)  # [R, H]
  if down_proj_bias is None:
    return out
  return add_tile_bias(out, down_proj_bias, tile_expert)
