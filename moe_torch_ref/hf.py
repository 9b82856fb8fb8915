"""Adapter to the Hugging Face transformers GPT-OSS MLP (router + experts).

This module owns the one conversion between the shared weights and transformers'
GptOssMLP parameters (`to_transformers`). In transformers 5.x the layouts coincide:
gate_up_proj [E, H, 2I] interleaved gate/up, down_proj [E, I, H], used as x @ W + b
(the experts are decorated `is_transposed=True, is_concatenated=False`), and the
parameter names equal ours; the conversion checks that against the installed
version and fails loudly if it changes.

The experts implementation is transformers' own switch, read at every forward from
`config._experts_implementation`: "eager" (the loop over hit experts), or a key of
`transformers.integrations.moe.ALL_EXPERTS_FUNCTIONS` such as "grouped_mm" or
"batched_mm".
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from moe_torch_ref import weights as weights_lib
from moe_torch_ref._common import MoEModule, MoEOptions


def _available() -> bool:
  try:
    return importlib.util.find_spec("transformers.models.gpt_oss.modeling_gpt_oss") is not None
  except (ImportError, ValueError):
    return False


AVAILABLE = _available()

# Ours -> transformers' GptOssMLP parameter names (identical in transformers 5.x).
_HF_NAMES = {name: name for name in weights_lib.NAMES}


def experts_implementations() -> tuple[str, ...]:
  """The experts implementations the installed transformers offers."""
  try:
    from transformers.integrations import moe  # pylint: disable=import-outside-toplevel
  except ImportError:
    return ("eager",)
  return ("eager",) + tuple(sorted(moe.ALL_EXPERTS_FUNCTIONS.keys()))


def to_transformers(tensors: Mapping[str, torch.Tensor], mlp: nn.Module) -> dict[str, torch.Tensor]:
  """Maps the shared weights onto `mlp`'s parameter names and layout.

  Args:
    tensors: the six shared weights, keyed by weights.NAMES.
    mlp: a transformers GptOssMLP (may live on the meta device); only its
      parameter names and shapes are read.

  Returns:
    transformers parameter name -> tensor (no copies: the layouts coincide).

  Raises:
    ValueError: the installed transformers expects other names or shapes.
  """
  hf_shapes = {n: tuple(p.shape) for n, p in mlp.named_parameters()}
  out, lines = {}, []
  for ours, theirs in _HF_NAMES.items():
    got = tuple(tensors[ours].shape)
    if theirs not in hf_shapes:
      lines.append(f"  transformers has no parameter {theirs!r} (for {ours})")
    elif hf_shapes[theirs] != got:
      lines.append(f"  {theirs}: transformers expects {hf_shapes[theirs]}, shared layout gives {got}")
    out[theirs] = tensors[ours]
  extra = sorted(set(hf_shapes) - set(_HF_NAMES.values()))
  lines += [f"  transformers parameter {n!r} has no shared weight" for n in extra]
  if lines:
    raise ValueError("the installed transformers GptOssMLP layout differs from the shared "
                     "weights; update moe_torch_ref.hf.to_transformers:\n" + "\n".join(lines))
  return out


class Transformers(MoEModule):
  """transformers' GptOssMLP router and experts, built from the shared weights.

  forward runs what GptOssMLP.forward runs (router, then experts) on [T, H] and also
  returns dense router scores. `hf_module` is the GptOssMLP itself; it shares this
  module's parameters. Only router="gpt_oss" and activation="gpt_oss_glu"; ties in
  the router follow torch.topk (unspecified), not the lower-index rule.
  """

  name = "transformers"
  supports_variants = False
  OPTIONS = ("experts_implementation",)

  def __init__(self, state_dict: Mapping[str, Any], opts: MoEOptions, *,
               experts_implementation: str = "eager"):
    super().__init__(state_dict, opts)
    valid = experts_implementations()
    if experts_implementation not in valid:
      raise ValueError(f"experts_implementation must be one of {list(valid)} "
                       f"(transformers' experts implementations), got {experts_implementation!r}")
    # pylint: disable=import-outside-toplevel
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

    config = GptOssConfig(
        hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
        num_local_experts=self.num_experts, num_experts_per_tok=opts.top_k, num_hidden_layers=1)
    config._experts_implementation = experts_implementation  # pylint: disable=protected-access
    with torch.device("meta"):
      mlp = GptOssMLP(config)
    dispatch = getattr(getattr(mlp.experts, "config", None), "_experts_implementation", None)
    if experts_implementation != "eager" and dispatch != experts_implementation:
      # Strict: never let a requested implementation fall back to eager silently.
      raise ValueError(f"experts_implementation={experts_implementation!r} was requested, but "
                       "this transformers' GptOssExperts does not dispatch on "
                       "config._experts_implementation")
    ours = dict(self.named_parameters())
    theirs = to_transformers({n: ours[n].detach() for n in weights_lib.NAMES}, mlp)
    for hf_name, tensor in theirs.items():
      owner, attr = hf_name.rsplit(".", 1)
      setattr(mlp.get_submodule(owner), attr, nn.Parameter(tensor))
    for attr, value in (("alpha", opts.swiglu_alpha), ("limit", opts.swiglu_limit)):
      if not hasattr(mlp.experts, attr):
        raise ValueError(f"this transformers GptOssExperts has no {attr!r}; cannot set swiglu_{attr}")
      setattr(mlp.experts, attr, value)
    self.experts_implementation = experts_implementation
    self.router, self.experts = mlp.router, mlp.experts
    object.__setattr__(self, "_mlp", mlp)  # not registered: its children are ours

  @property
  def hf_module(self) -> nn.Module:
    """The transformers GptOssMLP (shares parameters with this module)."""
    return self._mlp

  def extra_repr(self) -> str:
    return super().extra_repr() + f", experts_implementation={self.experts_implementation!r}"

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    routed = self.router(x2)
    if len(routed) == 3:  # transformers >= 5: (logits, top-k weights [T, K], indices)
      logits, top_weights, indices = routed
      y = self.experts(x2, indices, top_weights)
      scores = torch.zeros_like(logits).scatter(1, indices, top_weights)
    else:  # transformers 4.x: (dense scores [T, E], indices)
      scores, indices = routed
      logits = torch.nn.functional.linear(x2, self.router.weight, self.router.bias)
      top_weights = scores.gather(1, indices)
      y = self.experts(x2, router_indices=indices, routing_weights=scores)
    return {"router_logits": logits, "expert_indices": indices, "expert_weights": top_weights,
            "router_scores": scores, "y": y.reshape(x2.shape)}
