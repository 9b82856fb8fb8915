"""`MoELayer`: the Flax NNX module over `moe_forward`."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from moe_jax import convert
from moe_jax.config import MoEConfig
from moe_jax.forward import MoEParams, check_params, moe_forward, param_shapes

_SIDECAR_FIELDS = ("num_experts", "top_k", "hidden_size", "intermediate_size",
                    "swiglu_alpha", "swiglu_limit")


def init_param(key: jax.Array, name: str, config: MoEConfig) -> jax.Array:
  """One fresh parameter: router weight Kaiming-uniform (bound 1/sqrt(H)), expert
  matrices normal(0, 0.02), biases zero. `name` is a MoEParams field."""
  if name not in MoEParams._fields:
    raise ValueError(f"name must be one of {MoEParams._fields}, got {name!r}")
  shape = getattr(param_shapes(config), name)
  dt = config.param_dtype
  if name == "router_weight":
    bound = 1.0 / jnp.sqrt(config.hidden_size)
    return jax.random.uniform(key, shape, dt, -bound, bound)
  if name in ("gate_up_proj", "down_proj"):
    return 0.02 * jax.random.normal(key, shape, dt)
  return jnp.zeros(shape, dt)


def init_params(key: jax.Array, config: MoEConfig) -> MoEParams:
  """Fresh parameters, one `init_param` per field."""
  keys = jax.random.split(key, len(MoEParams._fields))
  return MoEParams(*(init_param(k, name, config) for k, name in zip(keys, MoEParams._fields)))


class MoELayer(nnx.Module):
  """GPT-OSS-style MoE layer for Flax NNX.

  Args:
    config: the layer's MoEConfig.
    rngs: draws the fresh parameters when `params` is None.
    params: a MoEParams to start from, taken as `jnp.asarray` gives them, in their own
      dtype (config.param_dtype applies to fresh parameters; `from_state_dict` and
      `from_safetensors` cast to it).

  Example:
    >>> layer = MoELayer(MoEConfig(num_experts=8, top_k=2, hidden_size=64,
    ...                            intermediate_size=128), rngs=nnx.Rngs(0))
    >>> y, aux = layer(jnp.ones((2, 16, 64)))
  """

  def __init__(self, config: MoEConfig, *, rngs: nnx.Rngs, params: MoEParams | None = None):
    if not isinstance(config, MoEConfig):
      raise TypeError(f"config must be a MoEConfig, got {type(config).__name__}")
    self.config = config
    if params is None:
      params = init_params(rngs.params(), config)
    check_params(params, config)
    for name, value in zip(MoEParams._fields, params):
      setattr(self, name, nnx.Param(jnp.asarray(value)))

  @property
  def params(self) -> MoEParams:
    return MoEParams(*(getattr(self, name)[...] for name in MoEParams._fields))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict]:
    return moe_forward(self.params, x, self.config)

  @classmethod
  def from_state_dict(cls, config: MoEConfig, mapping: Mapping[str, Any]) -> "MoELayer":
    """Builds a layer from a GPT-OSS MLP state dict (with or without an `mlp.` prefix).

    Tensors are cast to config.param_dtype; the caller's mapping is not modified.
    """
    params = convert.params_from_state_dict(mapping, dtype=config.param_dtype)
    return cls(config, rngs=nnx.Rngs(0), params=params)

  @classmethod
  def from_safetensors(cls, path: str | os.PathLike, config: MoEConfig | None = None,
                       **overrides: Any) -> "MoELayer":
    """Loads a weights file written by `moe_torch_ref.weights.save`.

    Args:
      path: the .safetensors file; its JSON sidecar gives E, K, H, I, alpha, limit.
      config: a full config to use instead of the sidecar's.
      **overrides: MoEConfig fields that replace the sidecar's or default ones
        (e.g. capacity_factor=None, implementation="xla", precision="highest").
        Without a sidecar, top_k must be given here.
    """
    tensors, meta = convert.read_safetensors(path)
    params = convert.params_from_state_dict(tensors)
    if config is None:
      fields = convert.infer_sizes(params)
      clash = {k: (meta[k], v) for k, v in fields.items()
               if k in meta and k not in overrides and meta[k] != v}
      if clash:
        said = ", ".join(f"{k}={a} where the tensors give {b}" for k, (a, b) in clash.items())
        raise ValueError(f"the sidecar {convert.sidecar_path(path)!r} disagrees with the "
                         f"tensors of {os.fspath(path)!r}: {said}")
      fields.update({k: meta[k] for k in _SIDECAR_FIELDS if k in meta})
      if "dtype" in meta:
        fields["dtype"] = fields["param_dtype"] = jnp.dtype(meta["dtype"])
      else:
        fields["dtype"] = fields["param_dtype"] = params.router_weight.dtype
      fields.update(overrides)
      if "top_k" not in fields:
        raise ValueError(f"{os.fspath(path)!r} has no JSON sidecar with top_k; pass top_k=...")
      config = MoEConfig(**fields)
    elif overrides:
      config = dataclasses.replace(config, **overrides)
    return cls(config, rngs=nnx.Rngs(0),
               params=MoEParams(*(p.astype(config.param_dtype) for p in params)))

  def to_state_dict(self, prefix: str = "") -> dict:
    """numpy arrays under the transformers GPT-OSS names (optionally prefixed, e.g. "mlp.")."""
    return convert.params_to_state_dict(self.params, prefix=prefix)
