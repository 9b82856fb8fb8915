"""moe-jax: a GPT-OSS-style Mixture-of-Experts layer for JAX and Flax with Pallas GPU kernels."""
from moe_jax.binned import binned_gather, binned_scatter
from moe_jax.config import MoEConfig, capacity_for
from moe_jax.convert import params_from_state_dict, params_to_state_dict
from moe_jax.dispatch import DispatchMeta, make_dispatch
from moe_jax.experts import binned_experts, dropless_experts, glu
from moe_jax.forward import MoEParams, layer_dispatch, moe_forward
from moe_jax.nnx_layer import MoELayer, init_param, init_params
from moe_jax.routing import load_balancing_loss, route, router_z_loss

__all__ = [
    "DispatchMeta", "MoEConfig", "MoELayer", "MoEParams", "binned_experts", "binned_gather",
    "binned_scatter", "capacity_for", "dropless_experts", "glu", "init_param", "init_params",
    "layer_dispatch", "load_balancing_loss", "make_dispatch", "moe_forward",
    "params_from_state_dict", "params_to_state_dict", "route", "router_z_loss",
]
