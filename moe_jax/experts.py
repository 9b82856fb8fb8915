"""Expert MLPs: interleaved gate/up projection, GLU, down projection, biases.

Matmuls accumulate in float32. In float32 their outputs stay float32; in bf16 they
come out in bf16 (as torch's do), which halves the [rows, 2I] intermediate and keeps
the weight gradients in the parameter dtype instead of float32. Biases and the GLU run
in float32 on the upcast values; the GLU's output is cast to the compute dtype before
the down projection. The down bias is added per row,
before the routing weight multiplies it (as GPT-OSS does).

Binned experts are two batched einsums over [E, C, H]. Dropless experts are two
grouped matmuls (`kernels.gmm`, with a custom VJP over `gmm`/`tgmm`) over the
dropless tile layout of `moe_jax.dispatch`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from moe_jax import kernels


def _dot_dtype(dtype) -> jnp.dtype:
  """The matmul output dtype: float32 for float32 compute, else the compute dtype."""
  return jnp.dtype(jnp.float32) if dtype == jnp.float32 else jnp.dtype(dtype)


def glu(gate_up: jax.Array, *, activation: str, alpha: float = 1.702, limit: float = 7.0) -> jax.Array:
  """[..., 2I] interleaved (gate even, up odd) -> [..., I]."""
  gate, up = gate_up[..., 0::2], gate_up[..., 1::2]
  if activation == "gpt_oss_glu":
    gate = jnp.minimum(gate, limit)
    up = jnp.clip(up, -limit, limit)
    return (up + 1.0) * (gate * jax.nn.sigmoid(alpha * gate))
  if activation == "swiglu":
    return jax.nn.silu(gate) * up
  raise ValueError(f"activation must be one of ('gpt_oss_glu', 'swiglu'), got {activation!r}")


def binned_experts(buf: jax.Array, gate_up_proj: jax.Array, gate_up_proj_bias: jax.Array,
                   down_proj: jax.Array, down_proj_bias: jax.Array, *, activation: str,
                   alpha: float = 1.702, limit: float = 7.0,
                   precision: jax.lax.Precision | None = None) -> jax.Array:
  """Runs every expert on its [C, H] bin.

  Args:
    buf: [E, C, H].
    gate_up_proj: [E, H, 2I]; gate_up_proj_bias: [E, 2I].
    down_proj: [E, I, H]; down_proj_bias: [E, H].

  Returns:
    [E, C, H] in buf's dtype, down bias included, not yet weighted.
  """
  dtype = buf.dtype
  h = jnp.einsum("ech,ehf->ecf", buf, gate_up_proj.astype(dtype), precision=precision,
                 preferred_element_type=_dot_dtype(dtype))  # [E, C, 2I]
  h = h.astype(jnp.float32) + gate_up_proj_bias.astype(jnp.float32)[:, None, :]
  a = glu(h, activation=activation, alpha=alpha, limit=limit).astype(dtype)  # [E, C, I]
  out = jnp.einsum("eci,eih->ech", a, down_proj.astype(dtype), precision=precision,
                   preferred_element_type=_dot_dtype(dtype))  # [E, C, H]
  return (out.astype(jnp.float32) + down_proj_bias.astype(jnp.float32)[:, None, :]).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _grouped_linear(x, w, tile_expert, precision, implementation):
  return kernels.gmm(x, w, tile_expert, out_dtype=_dot_dtype(x.dtype), precision=precision,
                     implementation=implementation)


def _grouped_linear_fwd(x, w, tile_expert, precision, implementation):
  return _grouped_linear(x, w, tile_expert, precision, implementation), (x, w, tile_expert)


def _grouped_linear_bwd(precision, implementation, res, g):
  x, w, tile_expert = res
  g = g.astype(x.dtype)
  dx = kernels.gmm(g, w, tile_expert, transpose_rhs=True, out_dtype=x.dtype,
                   precision=precision, implementation=implementation)  # [R, K]
  dw = kernels.tgmm(x, g, tile_expert, num_groups=w.shape[0], out_dtype=w.dtype,
                    precision=precision, implementation=implementation)  # [E, K, N]
  return dx, dw, None


_grouped_linear.defvjp(_grouped_linear_fwd, _grouped_linear_bwd)


def grouped_linear(x: jax.Array, w: jax.Array, tile_expert: jax.Array, *,
                   precision: jax.lax.Precision | None = None,
                   implementation: str | None = None) -> jax.Array:
  """Differentiable grouped matmul over row tiles: x [R, K] @ w[tile_expert] -> [R, N].

  forward `gmm`; backward dx = `gmm` with w transposed, dw = `tgmm`: the same
  kernels serve "xla" (ragged_dot) and "pallas". Output in `_dot_dtype(x.dtype)`.
  """
  return _grouped_linear(x, w.astype(x.dtype), tile_expert, precision, implementation)


def _add_tile_bias(h: jax.Array, bias: jax.Array, tile_expert: jax.Array) -> jax.Array:
  """h [R, F] + the f32 bias of each row's expert (0 on unused tiles) -> [R, F] f32.

  The bias is broadcast per tile ([num_tiles, 1, F]), never materialised per row.
  """
  num_tiles = tile_expert.shape[0]
  b = bias.astype(jnp.float32)[jnp.maximum(tile_expert, 0)]  # [num_tiles, F]
  b = jnp.where((tile_expert >= 0)[:, None], b, 0.0)
  h = h.astype(jnp.float32).reshape(num_tiles, -1, h.shape[-1]) + b[:, None, :]
  return h.reshape(-1, h.shape[-1])


def dropless_experts(rows: jax.Array, tile_expert: jax.Array, gate_up_proj: jax.Array,
                     gate_up_proj_bias: jax.Array, down_proj: jax.Array,
                     down_proj_bias: jax.Array, *, activation: str, alpha: float = 1.702,
                     limit: float = 7.0, precision: jax.lax.Precision | None = None,
                     implementation: str | None = None) -> jax.Array:
  """Runs the experts over the dropless tile layout with grouped matmuls.

  Args:
    rows: [R, H] expert-sorted rows in tiles of TM = R / num_tiles rows (empty rows 0).
    tile_expert: [num_tiles] expert of each tile, -1 for unused tiles.
    implementation: "xla" (ragged_dot), "pallas" (the Pallas grouped matmul) or None.

  Returns:
    [R, H] in rows' dtype, down bias included (also on empty rows of used tiles,
    which nothing reads).
  """
  dtype = rows.dtype
  lin = dict(precision=precision, implementation=implementation)
  h = grouped_linear(rows, gate_up_proj, tile_expert, **lin)  # [R, 2I]
  h = _add_tile_bias(h, gate_up_proj_bias, tile_expert)
  a = glu(h, activation=activation, alpha=alpha, limit=limit).astype(dtype)  # [R, I]
  out = grouped_linear(a, down_proj, tile_expert, **lin)  # [R, H]
  return _add_tile_bias(out, down_proj_bias, tile_expert).astype(dtype)
