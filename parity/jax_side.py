"""The JAX side of a parity run: stage outputs, end-to-end output and gradients.

The stages come from moe_jax's own stage functions, chained exactly as moe_forward
chains them, under one jit together with their gradient: routed_gather (the router,
dispatch and pack as one op, whose VJP computes x's gradient in one kernel), then
binned_experts / dropless_experts and binned_scatter. The end-to-end output comes
from moe_forward itself.

Routing may be forced. When the reference chose other experts for some tokens
(bf16 near-ties), the stages after routing run on the reference's indices, with
routing weights recomputed from JAX's own logits at those indices, so that
dispatch, experts, combine and gradients are compared like for like on every
token; the routing stages themselves always use JAX's own choice. A forced run chains
route, layer_dispatch and binned_gather (routed_gather routes by its own choice): the
same values and gradients, but for x's bfloat16 gradient, which autodiff rounds twice
there (its two terms, then their sum) and routed_gather once.

Fault injection (`inject`) is a test hook, not a feature: it perturbs the JAX side
of one stage so that the tests can check that the suite names that stage.
  glu_alpha   the GLU runs with alpha=1.0 instead of the file's (gpt_oss_glu only)
  drop_bias   the experts' down-projection bias is left out (zero in seed-notebook
              weights, so only cases with nonzero biases notice)
  tie_break   top-k breaks ties towards the higher expert index (only cases with
              exact ties notice, e.g. "ties")
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax import (MoEConfig, MoELayer, MoEParams, binned_experts, binned_gather,
                     binned_scatter, dropless_experts, layer_dispatch, moe_forward, route)
from moe_jax.binned import routed_gather
from moe_jax.forward import router_front
from moe_jax.convert import STATE_DICT_NAMES
from moe_jax.dispatch import grouped_to_padded, padded_to_grouped
from moe_jax.experts import add_tile_bias

INJECTIONS = ("glu_alpha", "drop_bias", "tie_break")
WRONG_ALPHA = 1.0
# MoEParams field -> the shared weight name used in stage names (grad:<name>).
PARAM_NAMES = dict(zip(MoEParams._fields, STATE_DICT_NAMES))
_CONFIG_PRECISION = {"highest": "highest", "default": None, "bf16": None}


def weights_at(logits: jax.Array, indices: jax.Array, router: str, normalize_topk: bool) -> jax.Array:
  """Routing weights [T, K] f32 of given expert indices, by the router's own formula."""
  if router == "gpt_oss":
    return jax.nn.softmax(jnp.take_along_axis(logits, indices, axis=-1), axis=-1)
  probs = jax.nn.softmax(logits, axis=-1)  # [T, E]
  w = jnp.take_along_axis(probs, indices, axis=-1)  # [T, K]
  return w / jnp.sum(w, axis=-1, keepdims=True) if normalize_topk else w


def _route(params: MoEParams, x: jax.Array, config, inject: str | None):
  kwargs = dict(top_k=config.top_k, kind=config.router, normalize_topk=config.normalize_topk,
                precision=config.lax_precision, implementation=config.implementation)
  if inject != "tie_break":
    return route(x, params.router_weight, params.router_bias, **kwargs)
  # Reversed expert order: lax.top_k then prefers the higher original index on ties.
  logits, indices, weights = route(x, params.router_weight[::-1], params.router_bias[::-1],
                                   **kwargs)
  return logits[:, ::-1], (config.num_experts - 1 - indices).astype(jnp.int32), weights


def _routing(params, x, forced, forced_idx, config, inject):
  """JAX's own routing, the routing the later stages use (forced or own), and the rows
  gathered by it. `forced` is static: True routes by forced_idx."""
  if not forced and inject != "tie_break":  # moe_forward's op
    logits, indices, weights, meta, rows = routed_gather(
        x, params.router_weight, params.router_bias, router_front(config))
    use_idx, use_w = indices, weights
  else:
    logits, indices, weights = _route(params, x, config, inject)  # [T, E], [T, K], [T, K]
    use_idx, use_w = ((forced_idx, weights_at(logits, forced_idx, config.router,
                                              config.normalize_topk))
                      if forced else (indices, weights))
    meta = layer_dispatch(use_idx, config)
    rows = binned_gather(x, meta, implementation=config.implementation)  # [E, C, H] or [M, H]
  own = dict(router_logits=logits, expert_indices=indices, expert_weights=weights,
             keep=meta.keep.reshape(x.shape[0], config.top_k),
             tokens_per_expert=meta.tokens_per_expert)
  return own, meta, use_idx, use_w, rows


def _loss(params, x, cot, forced, forced_idx, *, config, inject):
  """sum(y * cot) of the staged layer, and every stage output (y under "combine")."""
  stages, meta, use_idx, use_w, rows = _routing(params, x, forced, forced_idx, config, inject)
  alpha = WRONG_ALPHA if inject == "glu_alpha" else config.swiglu_alpha
  down_bias = params.down_proj_bias
  if inject == "drop_bias":
    down_bias = jnp.zeros_like(down_bias)
  mlp = dict(activation=config.activation, alpha=alpha, limit=config.swiglu_limit,
             precision=config.lax_precision)
  # As moe_forward: the experts leave the down bias to the combine.
  tensors = (params.gate_up_proj, params.gate_up_proj_bias, params.down_proj, None)
  if meta.grouped:
    out = dropless_experts(rows, meta.tile_expert, *tensors, tile_fill=meta.tile_fill,
                           implementation=config.implementation, **mlp)
  else:
    out = binned_experts(rows, *tensors, **mlp)
  y = binned_scatter(out, meta, use_w, bias=down_bias, expert_indices=use_idx,
                     implementation=config.implementation)  # [T, H]
  # The references' expert output includes the down bias: the stage view adds it.
  out_view = add_tile_bias(out, down_bias, meta.tile_expert)
  stages.update(dispatched=_sorted_rows(rows, meta), expert_out=_sorted_rows(out_view, meta),
                combine=y)
  return jnp.sum(y.astype(jnp.float32) * cot), stages


def _sorted_rows(rows, meta):
  """Rows as the references expose them: expert-sorted [M, H] dropless, [E, C, H] binned."""
  if not meta.grouped:
    return rows
  return rows[meta.sorted_row] if meta.capacity is None else grouped_to_padded(rows, meta)


def _run(params, output_params, x, cot, forced, forced_idx, *, config, output_config, inject):
  """Stages, gradients and moe_forward's y, under one jit."""
  grad = jax.grad(_loss, argnums=(0, 1), has_aux=True)
  (g_params, g_x), stages = grad(params, x, cot, forced, forced_idx, config=config, inject=inject)
  stages["output"] = moe_forward(output_params, x, output_config)[0]
  return g_params, g_x, stages


def _dispatch_combine(params, x, forced, forced_idx, ref_out, ref_w, *, config, inject):
  """Routing and dispatch as in _loss; the combine runs on the reference's expert output."""
  stages, meta, _, _, rows = _routing(params, x, forced, forced_idx, config, inject)
  stages["dispatched"] = _sorted_rows(rows, meta)
  if meta.grouped and meta.capacity is None:  # the reference's expert-sorted [M, H] -> tiles
    ref_out = jnp.zeros_like(rows).at[meta.sorted_row].set(ref_out.astype(rows.dtype))
  elif meta.grouped:  # the reference's [E, C, H] bins -> the grouped tiles
    ref_out = padded_to_grouped(ref_out.astype(rows.dtype), meta)
  stages["combine"] = binned_scatter(ref_out, meta, ref_w, implementation=config.implementation)
  return stages


@dataclasses.dataclass(frozen=True, kw_only=True)
class JaxOptions:
  """How the JAX side runs: its implementation, precision mode and injected fault."""
  implementation: str  # "xla" or "pallas"
  precision: str  # "highest", "default" or "bf16"
  inject: str | None = None

  def __post_init__(self):
    if self.implementation not in ("xla", "pallas"):
      raise ValueError(f"implementation must be 'xla' or 'pallas', got {self.implementation!r}")
    if self.precision not in _CONFIG_PRECISION:
      raise ValueError(
          f"precision must be one of {tuple(_CONFIG_PRECISION)}, got {self.precision!r}")
    if self.inject is not None and self.inject not in INJECTIONS:
      raise ValueError(f"inject must be one of {INJECTIONS} or None, got {self.inject!r}")


def load(path: str | os.PathLike, case, weight_config) -> tuple[MoEConfig, MoEParams]:
  """The layer config and parameters from the shared weights file (loaded once per case).

  The sidecar's E, K, H, I, alpha and limit are passed explicitly, as read by
  moe_torch_ref.weights.load, so both sides take them from the same file.
  """
  layer = MoELayer.from_safetensors(
      path, top_k=weight_config.top_k, swiglu_alpha=weight_config.swiglu_alpha,
      swiglu_limit=weight_config.swiglu_limit, capacity_factor=case.capacity_factor,
      router=case.router, normalize_topk=case.normalize_topk, activation=case.activation,
      dtype=jnp.dtype(case.dtype), param_dtype=jnp.dtype(case.dtype))
  return layer.config, layer.params


class JaxSide:
  """One JAX configuration (implementation, precision, fault) with its jitted functions."""

  def __init__(self, config: MoEConfig, params: MoEParams, options: JaxOptions):
    self.config = dataclasses.replace(config, implementation=options.implementation,
                                      precision=_CONFIG_PRECISION[options.precision])
    self.params = params
    self.options = options
    inject = options.inject
    # The end-to-end output sees the same fault as the stages, where moe_forward can.
    out_config, out_params = self.config, params
    if inject == "glu_alpha":
      out_config = dataclasses.replace(out_config, swiglu_alpha=WRONG_ALPHA)
    if inject == "drop_bias":
      out_params = out_params._replace(down_proj_bias=jnp.zeros_like(out_params.down_proj_bias))
    self._output_params = out_params
    # `forced` is static: a forced run (rare: bf16 near-ties) compiles its own chain.
    self._run = jax.jit(functools.partial(_run, config=self.config, output_config=out_config,
                                          inject=inject), static_argnames="forced")
    self._dispatch_combine = jax.jit(functools.partial(_dispatch_combine, config=self.config,
                                                       inject=inject),
                                     static_argnames="forced")

  def _forced(self, num_tokens: int, forced_idx: np.ndarray | None):
    forced = forced_idx is not None
    idx = forced_idx if forced else np.zeros((num_tokens, self.config.top_k))
    return forced, jnp.asarray(idx, jnp.int32)

  def run(self, x: np.ndarray, cot: np.ndarray, forced_idx: np.ndarray | None = None) -> dict:
    """Stages, gradients (grad:x, grad:<weight name>) and output (moe_forward) for x [T, H].

    Args:
      x: [T, H] in the case's dtype.
      cot: [T, H] float32 cotangent: the loss is sum(y * cot).
      forced_idx: [T, K] int32 indices to route by instead of JAX's own, or None.

    Returns:
      A dict of JAX arrays keyed by stage name. "output" is moe_forward's y with
      JAX's own routing, whatever forced_idx says.
    """
    forced, idx = self._forced(x.shape[0], forced_idx)
    g_params, g_x, stages = self._run(self.params, self._output_params, jnp.asarray(x),
                                      jnp.asarray(cot), forced_idx=idx, forced=forced)
    out = dict(stages)
    out["grad:x"] = g_x
    for field, value in zip(MoEParams._fields, g_params):
      out["grad:" + PARAM_NAMES[field]] = value
    return out

  def run_dispatch_combine(self, x: np.ndarray, ref_out: np.ndarray, ref_w: np.ndarray,
                           forced_idx: np.ndarray | None = None) -> dict:
    """Routing, dispatch and the combine of the reference's expert output [E, C, H]."""
    forced, idx = self._forced(x.shape[0], forced_idx)
    return dict(self._dispatch_combine(self.params, jnp.asarray(x), forced_idx=idx,
                                       ref_out=jnp.asarray(ref_out),
                                       ref_w=jnp.asarray(ref_w, jnp.float32), forced=forced))
