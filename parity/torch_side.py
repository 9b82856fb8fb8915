"""The PyTorch side of a parity run: which references apply, precision flags, stages and grads."""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

import moe_torch_ref

# binned_loop copies one slot at a time in Python; above this many routed slots
# (M = T*K) it takes minutes on a GPU and adds nothing: `binned` runs the same
# algorithm vectorised and is tested to give equal bits.
LOOP_MAX_SLOTS = 2048
# References whose top-k tie-break is not the lower-index rule (torch.topk's order
# among equal values is unspecified).
UNSPECIFIED_TIE_BREAK = frozenset({"transformers"})


def device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
  if torch.cuda.is_available():
    return torch.cuda.get_device_name()
  return "cpu"


def skip_reason(case, name: str) -> str | None:
  """Why reference `name` does not run on `case`, or None when it does."""
  if name not in moe_torch_ref.IMPLEMENTATIONS:
    return "not installed (transformers missing)" if name == "transformers" else "unknown"
  if case.stages == "dispatch_combine" and name not in moe_torch_ref.CAPACITY_IMPLEMENTATIONS:
    return "exposes no dispatched buffer: dispatch/combine cases use binned references"
  if not case.dropless and name not in moe_torch_ref.CAPACITY_IMPLEMENTATIONS:
    return f"dropless only; this case drops slots (capacity_factor={case.capacity_factor})"
  variant = case.router != "gpt_oss" or case.activation != "gpt_oss_glu"
  if variant and name not in moe_torch_ref.VARIANT_IMPLEMENTATIONS:
    return "supports only router=gpt_oss with activation=gpt_oss_glu"
  slots = case.tokens * case.top_k
  if name == "binned_loop" and slots > LOOP_MAX_SLOTS:
    return (f"Python loop over M={slots} > {LOOP_MAX_SLOTS} slots; `binned` (same algorithm, "
            "equal bits) covers this case")
  return None


@contextlib.contextmanager
def precision(mode: str):
  """Torch matmul flags for a precision mode, restored on exit.

  "highest" and "bf16": no TF32 anywhere, no reduced-precision bf16/fp16 reductions.
  "default": torch's own defaults, untouched.
  """
  if mode == "default":
    yield
    return
  matmul = torch.backends.cuda.matmul
  saved = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
           matmul.allow_bf16_reduced_precision_reduction,
           matmul.allow_fp16_reduced_precision_reduction, torch.get_float32_matmul_precision())
  try:
    matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    matmul.allow_bf16_reduced_precision_reduction = False
    matmul.allow_fp16_reduced_precision_reduction = False
    torch.set_float32_matmul_precision("highest")
    yield
  finally:
    (matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     matmul.allow_bf16_reduced_precision_reduction,
     matmul.allow_fp16_reduced_precision_reduction) = saved[:4]
    torch.set_float32_matmul_precision(saved[4])


@contextlib.contextmanager
def cpu_threads():
  """One torch thread on a CPU-only machine, restored on exit.

  After each JAX call, XLA's CPU thread pool keeps spinning for a while; torch's
  OpenMP workers then fight it for the cores, and small bf16 ops (index_add_) slow
  down by 10-100x on a 2-core machine. The small cases gain nothing from threads.
  """
  if torch.cuda.is_available():
    yield
    return
  saved = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(saved)


def build(name: str, state_dict: Mapping[str, torch.Tensor], case, weight_config) -> torch.nn.Module:
  """Reference `name` on the shared weights, on the torch device."""
  module = moe_torch_ref.create(
      name, state_dict, top_k=weight_config.top_k, capacity_factor=case.capacity_factor,
      router=case.router, normalize_topk=case.normalize_topk, activation=case.activation,
      swiglu_alpha=weight_config.swiglu_alpha, swiglu_limit=weight_config.swiglu_limit)
  return module.to(device())


def run(module: torch.nn.Module, x: torch.Tensor, cot: torch.Tensor | None) -> dict[str, Any]:
  """The reference's stages and, when cot is given, grad:x and grad:<param> of sum(y * cot).

  Args:
    module: from `build`.
    x: [T, H] in the weights' dtype, on the module's device.
    cot: [T, H] float32 cotangent, or None for a forward only.
  """
  if cot is None:
    with torch.no_grad():
      return dict(module.stages(x))
  x = x.detach().clone().requires_grad_(True)
  module.zero_grad(set_to_none=True)
  stages = dict(module.stages(x))
  loss = (stages["y"].float() * cot).sum()
  loss.backward()
  out = {key: (v.detach() if isinstance(v, torch.Tensor) else v) for key, v in stages.items()}
  out["grad:x"] = x.grad
  for pname, param in module.named_parameters():
    out["grad:" + pname] = param.grad  # None where this reference has no such gradient
  return out
