"""`moe_jax.linen.MoELayer`: the same layer for Flax Linen users, on the same core."""
from __future__ import annotations

import jax
from flax import linen as nn

from moe_jax.config import MoEConfig
from moe_jax.forward import MoEParams, moe_forward
from moe_jax.nnx_layer import init_param


class MoELayer(nn.Module):
  """GPT-OSS-style MoE layer for Flax Linen. Parameters use the MoEParams field names.

  Example:
    >>> layer = MoELayer(MoEConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=128))
    >>> x = jnp.ones((2, 16, 64))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> y, aux = layer.apply(variables, x)
  """
  config: MoEConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict]:
    cfg = self.config
    params = MoEParams(*(self.param(name, lambda key, n=name: init_param(key, n, cfg))
                         for name in MoEParams._fields))
    return moe_forward(params, x, cfg)
