"""Expert MLPs: interleaved gate/up projection, GLU, down projection, biases.

Matmuls accumulate in float32. In float32 their outputs stay float32; in bf16 they
come out in bf16 (as torch's do), which halves the [rows, 2I] intermediate and keeps
the weight gradients in the parameter dtype instead of float32. Biases and the GLU run
in float32 on the upcast values; the GLU's output is cast to the compute dtype before
the down projection. The down bias is added per row,
before the routing weight multiplies it (as GPT-OSS does).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


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


def dropless_experts(rows: jax.Array, sorted_experts: jax.Array, tokens_per_expert: jax.Array,
                     gate_up_proj: jax.Array, gate_up_proj_bias: jax.Array, down_proj: jax.Array,
                     down_proj_bias: jax.Array, *, activation: str, alpha: float = 1.702,
                     limit: float = 7.0, precision: jax.lax.Precision | None = None) -> jax.Array:
  """Runs the experts over expert-sorted rows with a grouped matmul.

  Args:
    rows: [M, H] expert-sorted rows.
    sorted_experts: [M] the expert of each row.
    tokens_per_expert: [E] group sizes (they sum to M).

  Returns:
    [M, H] in rows' dtype, down bias included.
  """
  dtype = rows.dtype
  group_sizes = tokens_per_expert.astype(jnp.int32)
  h = jax.lax.ragged_dot(rows, gate_up_proj.astype(dtype), group_sizes, precision=precision,
                         preferred_element_type=_dot_dtype(dtype))  # [M, 2I]
  h = h.astype(jnp.float32) + gate_up_proj_bias.astype(jnp.float32)[sorted_experts]
  a = glu(h, activation=activation, alpha=alpha, limit=limit).astype(dtype)  # [M, I]
  out = jax.lax.ragged_dot(a, down_proj.astype(dtype), group_sizes, precision=precision,
                           preferred_element_type=_dot_dtype(dtype))  # [M, H]
  return (out.astype(jnp.float32) + down_proj_bias.astype(jnp.float32)[sorted_experts]).astype(dtype)
