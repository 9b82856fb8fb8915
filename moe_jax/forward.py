"""`moe_forward`: the functional MoE layer (route -> dispatch -> experts -> combine)."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from moe_jax import binned, experts, kernels, routing
from moe_jax.config import MoEConfig
from moe_jax.dispatch import DispatchMeta, grouped_fits, make_dispatch


class MoEParams(NamedTuple):
  """The six tensors of the GPT-OSS layout (transformers names in comments)."""
  router_weight: jax.Array  # router.weight [E, H]
  router_bias: jax.Array  # router.bias [E]
  gate_up_proj: jax.Array  # experts.gate_up_proj [E, H, 2I], gate even / up odd columns
  gate_up_proj_bias: jax.Array  # experts.gate_up_proj_bias [E, 2I]
  down_proj: jax.Array  # experts.down_proj [E, I, H]
  down_proj_bias: jax.Array  # experts.down_proj_bias [E, H]


def param_shapes(config: MoEConfig) -> MoEParams:
  """The expected shape of every parameter."""
  e, h, i = config.num_experts, config.hidden_size, config.intermediate_size
  return MoEParams((e, h), (e,), (e, h, 2 * i), (e, 2 * i), (e, i, h), (e, h))


def check_params(params: MoEParams, config: MoEConfig) -> None:
  """Raises one ValueError naming every parameter whose shape or dtype is wrong."""
  if not isinstance(params, MoEParams):
    raise ValueError(f"params must be a MoEParams of {len(MoEParams._fields)} arrays (for a "
                     "transformers state dict use params_from_state_dict), got "
                     f"{type(params).__name__}")
  problems = []
  for name, want, got in zip(MoEParams._fields, param_shapes(config), params):
    shape = tuple(getattr(got, "shape", ()))
    if shape != want:
      problems.append(f"{name} must have shape {want}, got {shape}")
    elif not jnp.issubdtype(got.dtype, jnp.floating):
      problems.append(f"{name} must be floating, got {got.dtype}")
  if problems:
    raise ValueError("bad MoE parameters for " + _describe(config) + ":\n  " + "\n  ".join(problems))


def _describe(config: MoEConfig) -> str:
  return (f"E={config.num_experts} H={config.hidden_size} I={config.intermediate_size} "
          f"K={config.top_k}")


def check_input(x: jax.Array, config: MoEConfig) -> None:
  """Validates x's rank, last dimension and dtype (static checks only)."""
  if not (hasattr(x, "shape") and hasattr(x, "dtype")):
    raise ValueError(f"x must be an array of shape [..., H={config.hidden_size}] (a jax or "
                     f"numpy array), got {type(x).__name__}")
  if x.ndim < 1:
    raise ValueError(f"x must have rank >= 1 with last dimension H={config.hidden_size}, got a scalar")
  if x.shape[-1] != config.hidden_size:
    raise ValueError(
        f"x must have last dimension H={config.hidden_size} (config.hidden_size), got shape {x.shape}")
  if x.size == 0:
    raise ValueError(f"x must hold at least one token (T = the product of its leading "
                     f"dimensions >= 1), got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"x must have a floating dtype (computed in {config.dtype}), got {x.dtype}")


def layer_dispatch(indices: jax.Array, config: MoEConfig) -> DispatchMeta:
  """The layer's dispatch of the router's [T, K] choices: dropless or binned, and its layout.

  Binned mode runs in the grouped layout (grouped matmuls over each expert's kept
  slots only) when the implementation is "pallas" and that layout has no more rows
  than the [E, C] buffer (`grouped_fits`); otherwise in the padded layout (batched
  einsums over all E*C rows). Both keep and drop the same slots.
  """
  if indices.ndim != 2 or indices.shape[1] != config.top_k:
    raise ValueError(f"indices must be [T, K={config.top_k}] (config.top_k), got shape "
                     f"{indices.shape}")
  num_tokens = indices.shape[0]
  capacity = config.capacity(num_tokens)
  grouped = None
  if capacity is not None:
    grouped = (kernels.resolve_implementation(config.implementation) == "pallas"
               and grouped_fits(num_tokens * config.top_k, config.num_experts, capacity))
  return make_dispatch(indices, config.num_experts, capacity, grouped=grouped,
                       implementation=config.implementation)


def router_front(config: MoEConfig, *, skip_unused: bool = False) -> binned.RouterFront:
  """The layer's routing and dispatch as `binned.routed_gather` takes them: the config's
  router (`routing.route_logits`) and `layer_dispatch`."""
  return binned.RouterFront(
      route_logits=functools.partial(
          routing.route_logits, top_k=config.top_k, kind=config.router,
          normalize_topk=config.normalize_topk, implementation=config.implementation),
      dispatch=functools.partial(layer_dispatch, config=config),
      precision=config.lax_precision, implementation=config.implementation,
      skip_unused=skip_unused)


def moe_forward(params: MoEParams, x: jax.Array, config: MoEConfig) -> tuple[jax.Array, dict]:
  """Applies the MoE layer.

  Args:
    params: MoEParams in the GPT-OSS layout.
    x: [..., H] tokens, any leading dims; computed in config.dtype.
    config: the layer config.

  Returns:
    y with x's leading dims and config.dtype, and an aux dict:
      router_logits [T, E] f32, expert_indices [T, K] int32, expert_weights [T, K] f32,
      tokens_per_expert [E] int32, drop_fraction (), load_balancing_loss (),
      router_z_loss ().

  Example:
    >>> cfg = MoEConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=32)
    >>> params = init_params(jax.random.key(0), cfg)  # moe_jax.init_params
    >>> y, aux = moe_forward(params, jnp.ones((2, 16, 64)), cfg)
    >>> y.shape
    (2, 16, 64)
  """
  if not isinstance(config, MoEConfig):
    raise ValueError(f"config must be a MoEConfig, got {type(config).__name__}")
  check_input(x, config)
  check_params(params, config)
  lead = x.shape[:-1]
  x2 = x.reshape(-1, config.hidden_size).astype(config.dtype)  # [T, H]
  precision = config.lax_precision
  impl = config.implementation

  # route -> layer_dispatch -> binned_gather, with one kernel for x's gradient. On the
  # grouped layout nothing reads the unused tiles' rows (the matmuls skip those tiles,
  # the combine and the packs read slots' rows): their zeros go unwritten.
  logits, indices, weights, meta, rows = binned.routed_gather(
      x2, params.router_weight, params.router_bias,
      router_front(config, skip_unused=True))  # rows [E, C, H] or [R, H]
  skip = meta.grouped
  mlp_kwargs = dict(activation=config.activation, alpha=config.swiglu_alpha,
                    limit=config.swiglu_limit, precision=precision)
  # The down bias is left to the combine, which adds it per kept slot in f32: no
  # pass over the [R, H] expert output (`bench/NOTES.md` variant 16).
  expert_weights = (params.gate_up_proj, params.gate_up_proj_bias, params.down_proj, None)
  if meta.grouped:
    out = experts.dropless_experts(rows, meta.tile_expert, *expert_weights,
                                   tile_fill=meta.tile_fill, implementation=impl,
                                   zero_unused=not skip, **mlp_kwargs)  # [R, H]
  else:
    out = experts.binned_experts(rows, *expert_weights, **mlp_kwargs)  # [E, C, H]
  y = binned.binned_scatter(out, meta, weights, bias=params.down_proj_bias,
                            expert_indices=indices, implementation=impl,
                            skip_unused=skip)  # [T, H]

  aux = dict(
      router_logits=logits,
      expert_indices=indices,
      expert_weights=weights,
      tokens_per_expert=meta.tokens_per_expert,
      drop_fraction=meta.drop_fraction,
      load_balancing_loss=routing.load_balancing_loss(logits, meta.tokens_per_expert, config.top_k),
      router_z_loss=routing.router_z_loss(logits),
  )
  return y.reshape(*lead, config.hidden_size), aux
