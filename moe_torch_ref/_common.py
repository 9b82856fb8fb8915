"""Pieces every PyTorch implementation shares: options, router, GLU, base module.

Shape vocabulary: T tokens, H hidden, I intermediate, E experts, K top-k,
C capacity, M = T*K routed rows (token-slots, flat index t*K + k).
"""
from __future__ import annotations

import dataclasses
import fractions
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moe_torch_ref import weights as weights_lib

ROUTERS = ("gpt_oss", "softmax_topk")
ACTIVATIONS = ("gpt_oss_glu", "swiglu")
# float64 is accepted for finite-difference checks; shared weight files hold float32/bfloat16.
MODULE_DTYPES = (torch.float32, torch.bfloat16, torch.float64)


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)))


def capacity(capacity_factor: float, num_tokens: int, top_k: int, num_experts: int) -> int:
  """Expert capacity C = ceil(capacity_factor * T * K / E).

  The product is computed exactly on the decimal value of `capacity_factor` (its
  shortest repr; a NumPy float's in its own precision), so 1.1 * 10 / 1 gives 11, not
  the 12 that float rounding would.

  Args:
    capacity_factor: finite float > 0.
    num_tokens: T, all tokens of the batch (B*S).
    top_k: K.
    num_experts: E.

  Returns:
    C as an int (>= 1 whenever T >= 1).

  Example:
    >>> capacity(1.25, num_tokens=100, top_k=4, num_experts=128)
    4
  """
  if not _is_number(capacity_factor) or not math.isfinite(capacity_factor) or capacity_factor <= 0:
    raise ValueError(f"capacity_factor must be a finite number > 0, got {capacity_factor!r}")
  for name, value, low in (("num_tokens", num_tokens, 0), ("top_k", top_k, 1),
                           ("num_experts", num_experts, 1)):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
  # A NumPy float's shortest decimal in its own precision (np.float32(1.1) is 1.1).
  text = str(capacity_factor) if isinstance(capacity_factor, np.floating) else repr(
      float(capacity_factor))
  return math.ceil(fractions.Fraction(text) * num_tokens * top_k / num_experts)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoEOptions:
  """Routing and activation options of one MoE layer (the sizes come from the weights).

  Attributes:
    top_k: K, experts per token.
    capacity_factor: None (dropless) or a finite number > 0 (binned implementations).
    router: "gpt_oss" (top-k of logits, softmax over the K values) or "softmax_topk"
      (softmax over E, top-k, renormalised to sum 1 if `normalize_topk`).
    normalize_topk: renormalise the K softmax_topk weights; ignored by "gpt_oss".
    activation: "gpt_oss_glu" (clamped, (up + 1) * gate * sigmoid(alpha * gate)) or
      "swiglu" (silu(gate) * up); both read gate/up interleaved from gate_up columns.
    swiglu_alpha: sigmoid gain of gpt_oss_glu.
    swiglu_limit: clamp limit of gpt_oss_glu.
  """

  top_k: int
  capacity_factor: float | None = None
  router: str = "gpt_oss"
  normalize_topk: bool = True
  activation: str = "gpt_oss_glu"
  swiglu_alpha: float = 1.702
  swiglu_limit: float = 7.0

  def __post_init__(self):
    if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
      raise ValueError(f"top_k must be an int >= 1, got {self.top_k!r}")
    cf = self.capacity_factor
    if cf is not None and (not _is_number(cf) or not math.isfinite(cf) or cf <= 0):
      raise ValueError(f"capacity_factor must be None or a finite number > 0, got {cf!r}")
    if self.router not in ROUTERS:
      raise ValueError(f"router must be one of {list(ROUTERS)}, got {self.router!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
    if not isinstance(self.normalize_topk, bool):
      raise ValueError(f"normalize_topk must be a bool, got {self.normalize_topk!r}")
    for name in ("swiglu_alpha", "swiglu_limit"):
      value = getattr(self, name)
      if not _is_number(value) or math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


class Routing(NamedTuple):
  """Router output for T tokens."""
  logits: torch.Tensor   # [T, E]
  indices: torch.Tensor  # [T, K] int64, by descending score, ties to the lower index
  weights: torch.Tensor  # [T, K] routing weights, dtype of logits
  scores: torch.Tensor   # [T, E] dense: weights at `indices`, zero elsewhere


def top_k_lower_index(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
  """Top-k along the last axis; among equal scores the lower index wins.

  torch.topk does not promise any order among ties, so this takes the first k of
  a stable descending sort instead (equal elements keep their index order).

  Returns:
    (values [..., k] differentiable w.r.t. `scores`, indices [..., k] int64).
  """
  order = torch.sort(scores.detach(), dim=-1, descending=True, stable=True).indices
  indices = order[..., :k]
  return scores.gather(-1, indices), indices


def route(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
          opts: MoEOptions) -> Routing:
  """Router logits, top-k choice and routing weights.

  Args:
    x: [T, H] tokens.
    weight: [E, H] router weight.
    bias: [E] router bias.
    opts: router kind, K and normalize_topk.

  Returns:
    Routing(logits [T, E], indices [T, K], weights [T, K], scores [T, E]).
  """
  logits = F.linear(x, weight, bias)  # [T, E]
  if opts.router == "gpt_oss":
    top, indices = top_k_lower_index(logits, opts.top_k)  # [T, K]
    top_weights = torch.softmax(top, dim=-1)
  else:
    probs = torch.softmax(logits, dim=-1)  # [T, E]
    top_weights, indices = top_k_lower_index(probs, opts.top_k)
    if opts.normalize_topk:
      top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)
  scores = torch.zeros_like(logits).scatter(1, indices, top_weights)  # [T, E]
  return Routing(logits, indices, top_weights, scores)


def glu(h: torch.Tensor, opts: MoEOptions) -> torch.Tensor:
  """Gated activation of interleaved gate/up columns: [..., 2I] -> [..., I]."""
  gate, up = h[..., ::2], h[..., 1::2]
  if opts.activation == "swiglu":
    return F.silu(gate) * up
  limit = opts.swiglu_limit
  gate = gate.clamp(max=limit)
  up = up.clamp(min=-limit, max=limit)
  return (up + 1) * (gate * torch.sigmoid(gate * opts.swiglu_alpha))


def _as_tensor(value: Any) -> torch.Tensor:
  """A fresh tensor holding `value` (never a view of the caller's object)."""
  if isinstance(value, torch.Tensor):
    return value.detach().clone().contiguous()
  if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
    return weights_lib._to_torch(value)  # copies
  raise ValueError(f"weights must be torch tensors or numpy arrays, got {type(value).__name__}")


def parse_state_dict(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], int, int, int]:
  """Copies and validates the six weights; infers E, H, I.

  Returns:
    (tensors keyed by weights.NAMES, E, H, I).

  Raises:
    ValueError: one message listing every missing/extra name, wrong shape or dtype.
  """
  if not isinstance(state_dict, Mapping):
    raise ValueError(f"state_dict must be a mapping of name -> tensor, got {type(state_dict).__name__}")
  missing = [n for n in weights_lib.NAMES if n not in state_dict]
  extra = sorted(set(state_dict) - set(weights_lib.NAMES))
  if missing or extra:
    lines = [f"  missing: {n}" for n in missing] + [f"  extra: {n}" for n in extra]
    raise ValueError("state_dict must hold exactly the six GPT-OSS weights:\n" + "\n".join(lines))
  tensors = {n: _as_tensor(state_dict[n]) for n in weights_lib.NAMES}
  rw, dp = tensors["router.weight"], tensors["experts.down_proj"]
  if rw.dim() != 2 or dp.dim() != 3:
    raise ValueError(f"router.weight must be [E, H] and experts.down_proj [E, I, H], got shapes "
                     f"{tuple(rw.shape)} and {tuple(dp.shape)}")
  e, h = rw.shape
  i = dp.shape[1]
  expected = {
      "router.weight": (e, h), "router.bias": (e,), "experts.gate_up_proj": (e, h, 2 * i),
      "experts.gate_up_proj_bias": (e, 2 * i), "experts.down_proj": (e, i, h),
      "experts.down_proj_bias": (e, h)}
  dtype = rw.dtype
  lines = []
  for name, shape in expected.items():
    t = tensors[name]
    if tuple(t.shape) != shape:
      lines.append(f"  wrong shape: {name} expected {shape}, got {tuple(t.shape)}")
    if t.dtype != dtype:
      lines.append(f"  wrong dtype: {name} expected {dtype} (router.weight's), got {t.dtype}")
    if t.device != rw.device:
      lines.append(f"  wrong device: {name} expected {rw.device}, got {t.device}")
  if dtype not in MODULE_DTYPES:
    lines.append(f"  unsupported dtype {dtype}; expected one of {list(MODULE_DTYPES)}")
  if lines:
    raise ValueError(f"state_dict does not form one MoE layer with E={e} H={h} I={i} "
                     f"(from router.weight and experts.down_proj):\n" + "\n".join(lines))
  return tensors, e, h, i


class Router(nn.Module):
  """Holds router.weight [E, H] and router.bias [E]."""

  def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
    super().__init__()
    self.weight = nn.Parameter(weight)
    self.bias = nn.Parameter(bias)


class Experts(nn.Module):
  """Holds the expert weights in the transformers GPT-OSS layout."""

  def __init__(self, tensors: Mapping[str, torch.Tensor]):
    super().__init__()
    self.gate_up_proj = nn.Parameter(tensors["experts.gate_up_proj"])            # [E, H, 2I]
    self.gate_up_proj_bias = nn.Parameter(tensors["experts.gate_up_proj_bias"])  # [E, 2I]
    self.down_proj = nn.Parameter(tensors["experts.down_proj"])                  # [E, I, H]
    self.down_proj_bias = nn.Parameter(tensors["experts.down_proj_bias"])        # [E, H]


class MoEModule(nn.Module):
  """Base of every implementation: weights, validation, forward and stages.

  Subclasses implement `_compute(x2)` for x2 [T, H], returning a dict that holds at
  least "y" [T, H] and the routing keys; `forward` and `stages` wrap it. Parameter
  names equal the shared weight names, so `state_dict()` round-trips through
  `moe_torch_ref.weights`.
  """

  name: ClassVar[str] = ""
  dropless_only: ClassVar[bool] = True
  # Whether router="softmax_topk" and activation="swiglu" are supported.
  supports_variants: ClassVar[bool] = True
  # Implementation-specific keyword options accepted by the constructor.
  OPTIONS: ClassVar[tuple[str, ...]] = ()

  def __init__(self, state_dict: Mapping[str, Any], opts: MoEOptions):
    super().__init__()
    tensors, e, h, i = parse_state_dict(state_dict)
    if opts.top_k > e:
      raise ValueError(f"top_k must be in [1, E={e}], got {opts.top_k}")
    if self.dropless_only and opts.capacity_factor is not None:
      raise ValueError(f"implementation {self.name!r} is dropless: capacity_factor must be None, "
                       f"got {opts.capacity_factor!r}")
    if not self.supports_variants and (opts.router != "gpt_oss" or opts.activation != "gpt_oss_glu"):
      raise ValueError(f"implementation {self.name!r} supports only router='gpt_oss' and "
                       f"activation='gpt_oss_glu', got router={opts.router!r}, "
                       f"activation={opts.activation!r}")
    self.opts = opts
    self.num_experts, self.hidden_size, self.intermediate_size = e, h, i
    self.router = Router(tensors["router.weight"], tensors["router.bias"])
    self.experts = Experts(tensors)

  @property
  def top_k(self) -> int:
    return self.opts.top_k

  @property
  def dtype(self) -> torch.dtype:
    return self.router.weight.dtype

  def extra_repr(self) -> str:
    o = self.opts
    return (f"name={self.name!r}, E={self.num_experts}, K={o.top_k}, H={self.hidden_size}, "
            f"I={self.intermediate_size}, capacity_factor={o.capacity_factor}, "
            f"router={o.router!r}, activation={o.activation!r}")

  def _flatten(self, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
      raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3) or x.shape[-1] != self.hidden_size:
      raise ValueError(f"x must have shape [T, H] or [B, S, H] with H={self.hidden_size}, "
                       f"got shape {tuple(x.shape)}")
    if x.dtype != self.dtype:
      raise ValueError(f"x must have dtype {self.dtype} (the weights' dtype), got {x.dtype}")
    if x.device != self.router.weight.device:
      raise ValueError(f"x must be on {self.router.weight.device} (the weights' device), "
                       f"got {x.device}")
    return x.reshape(-1, self.hidden_size)

  def _route(self, x2: torch.Tensor) -> Routing:
    return route(x2, self.router.weight, self.router.bias, self.opts)

  @staticmethod
  def _routing_stages(r: Routing) -> dict[str, Any]:
    return {"router_logits": r.logits, "expert_indices": r.indices,
            "expert_weights": r.weights, "router_scores": r.scores}

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    raise NotImplementedError

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the layer.

    Args:
      x: [T, H] or [B, S, H], the weights' dtype and device.

    Returns:
      (y with x's shape, router_scores [T, E]: the K routing weights at the chosen
      experts, zero elsewhere).
    """
    out = self._compute(self._flatten(x))
    return out["y"].reshape(x.shape), out["router_scores"]

  def stages(self, x: torch.Tensor) -> dict[str, Any]:
    """Intermediates for parity checks (x as in `forward`; T = all tokens).

    Keys present in every implementation: router_logits [T, E], expert_indices
    [T, K] int64, expert_weights [T, K], router_scores [T, E], y [T, H]. Binned
    implementations add dispatched [E, C, H], expert_out [E, C, H] (expert MLP
    output incl. down bias, before the routing weight), dropped [T, K] bool,
    capacity (int) and tokens_per_expert [E] (routed slots, before dropping).
    """
    return self._compute(self._flatten(x))
