"""PyTorch reference implementations of the GPT-OSS MoE layer, on shared weights.

Every implementation is an `nn.Module` built by `create` from the six shared
weights (see `moe_torch_ref.weights`). `module(x)` takes x [T, H] or [B, S, H] and
returns (y with x's shape, router_scores [T, E]); `module.stages(x)` returns named
intermediates for parity checks.

Implementations (`IMPLEMENTATIONS`):
  binned_loop    the reference notebook's binned algorithm with Python loops (oracle)
  binned         the same, vectorised; equal bits; capacity_factor drops slots
  gpt_oss_dense  GPT-OSS inference path: every token through every expert
  gpt_oss_loop   GPT-OSS training path: loop over hit experts, index_add_
  grouped        sort + grouped GEMM, dropless, no host sync on CUDA bf16
  transformers   transformers' GptOssMLP (only when transformers is importable)

Example:
  >>> import torch, moe_torch_ref
  >>> from moe_torch_ref import ops, weights
  >>> cfg = weights.WeightConfig(num_experts=8, top_k=2, hidden_size=64,
  ...                            intermediate_size=32, dtype="float32")
  >>> layer = moe_torch_ref.create("grouped", weights.generate(cfg), top_k=2)
  >>> y, scores = layer(torch.randn(3, 5, 64))
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_torch_ref import weights
from moe_torch_ref._common import ACTIVATIONS, ROUTERS, MoEModule, MoEOptions, capacity
from moe_torch_ref.binned import Binned, BinnedLoop
from moe_torch_ref.gpt_oss import GptOssDense, GptOssLoop
from moe_torch_ref.grouped import Grouped
from moe_torch_ref import hf as _hf

_REGISTRY: dict[str, type[MoEModule]] = {
    cls.name: cls for cls in (BinnedLoop, Binned, GptOssDense, GptOssLoop, Grouped)}
if _hf.AVAILABLE:
  _REGISTRY[_hf.Transformers.name] = _hf.Transformers

IMPLEMENTATIONS: tuple[str, ...] = tuple(_REGISTRY)
# Implementations that accept a capacity_factor (and may drop token-slots).
CAPACITY_IMPLEMENTATIONS: tuple[str, ...] = tuple(
    n for n, c in _REGISTRY.items() if not c.dropless_only)
# Implementations that support router="softmax_topk" and activation="swiglu".
VARIANT_IMPLEMENTATIONS: tuple[str, ...] = tuple(
    n for n, c in _REGISTRY.items() if c.supports_variants)


def create(name: str, state_dict: Mapping[str, Any], *, top_k: int,
           capacity_factor: float | None = None, router: str = "gpt_oss",
           normalize_topk: bool = True, activation: str = "gpt_oss_glu",
           swiglu_alpha: float = 1.702, swiglu_limit: float = 7.0,
           **options: Any) -> MoEModule:
  """Builds implementation `name` from the shared weights.

  Args:
    name: one of IMPLEMENTATIONS.
    state_dict: the six weights (torch tensors or numpy arrays; copied, never
      modified). E, H, I and the dtype (float32, bfloat16; float64 for tests) are
      read from them; inputs must then use the same dtype and device.
    top_k: K, in [1, E].
    capacity_factor: None (nothing dropped) or a number > 0, giving capacity
      C = ceil(capacity_factor * T * K / E); only binned implementations accept one.
    router: "gpt_oss" (softmax over the top-K logits) or "softmax_topk" (softmax
      over E, then top-K). Ties go to the lower expert index.
    normalize_topk: renormalise the softmax_topk weights to sum 1.
    activation: "gpt_oss_glu" or "swiglu", on interleaved gate/up columns.
    swiglu_alpha: GPT-OSS GLU sigmoid gain.
    swiglu_limit: GPT-OSS GLU clamp limit.
    **options: implementation-specific: `matmul` for "grouped" ("auto",
      "grouped_mm", "loop"); `experts_implementation` for "transformers" ("eager",
      "grouped_mm", "batched_mm", ...).

  Returns:
    The module (on the weights' device; move it with `.to`).

  Raises:
    ValueError: unknown name or option, bad weights, or options the implementation
      does not support.
  """
  if name not in _REGISTRY:
    raise ValueError(f"implementation must be one of {list(IMPLEMENTATIONS)}, got {name!r}")
  cls = _REGISTRY[name]
  unknown = sorted(set(options) - set(cls.OPTIONS))
  if unknown:
    raise ValueError(f"implementation {name!r} accepts options {list(cls.OPTIONS)}, "
                     f"got unknown {unknown}")
  opts = MoEOptions(top_k=top_k, capacity_factor=capacity_factor, router=router,
                    normalize_topk=normalize_topk, activation=activation,
                    swiglu_alpha=swiglu_alpha, swiglu_limit=swiglu_limit)
  return cls(state_dict, opts, **options)


__all__ = [
    "ACTIVATIONS", "CAPACITY_IMPLEMENTATIONS", "IMPLEMENTATIONS", "MoEModule", "MoEOptions",
    "ROUTERS", "VARIANT_IMPLEMENTATIONS", "capacity", "create", "ops", "weights",
]
