"""`moe_jax.linen.MoELayer`: the same layer for Flax Linen users, on the same core."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from moe_jax.config import MoEConfig
from moe_jax.forward import MoEParams, moe_forward, param_shapes


class MoELayer(nn.Module):
  """GPT-OSS-style MoE layer for Flax Linen. Parameters use the MoEParams field names.

  Example:
    >>> layer = MoELayer(MoEConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=128))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> y, aux = layer.apply(variables, x)
  """
  config: MoEConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict]:
    cfg = self.config
    shapes = param_shapes(cfg)
    bound = 1.0 / jnp.sqrt(cfg.hidden_size)
    uniform = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
    normal = nn.initializers.normal(0.02)
    zeros = nn.initializers.zeros
    inits = MoEParams(uniform, zeros, normal, zeros, normal, zeros)
    params = MoEParams(*(self.param(name, init, shape, cfg.param_dtype)
                         for name, init, shape in zip(MoEParams._fields, inits, shapes)))
    return moe_forward(params, x, cfg)
