"""Dropless grouped-GEMM MoE: the fastest pipeline on plain PyTorch.

Pipeline for x [T, H] (M = T*K token-slots):
  1. route; stable-sort the M slots by expert           -> order [M], expert_sorted [M]
  2. gather the tokens in that order                    -> xs [M, H]
  3. grouped GEMM with gate_up, + bias rows by expert   -> [M, 2I]; GLU -> [M, I]
  4. grouped GEMM with down                             -> [M, H]
  5. unsort through the inverse permutation (a gather) -> [T, K, H], and combine with
     one bmm: y[t] = sum_k w[t, k] * out[t, k]
  6. the down bias enters as router_scores [T, E] @ down_proj_bias [E, H]: the same
     sum_k w[t, k] * b[e_k], with no [M, H] copy of bias rows.
Group ends come from searchsorted on the sorted experts, so nothing reads back to
the host on the grouped_mm path. Every step is differentiable.

The grouped GEMM is chosen by `matmul`:
  "grouped_mm": torch's grouped GEMM (F.grouped_mm / torch._grouped_mm, offsets are
      int32 cumulative group ends). Fast on CUDA for bfloat16 (SM80+).
  "loop": one torch.mm per non-empty expert over its contiguous rows; reads the group
      ends to the host once per GEMM. Any dtype and device.
  "auto" (default): "grouped_mm" for bfloat16 on CUDA when H and I keep rows 16-byte
      aligned, else "loop".
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from moe_torch_ref._common import MoEModule, MoEOptions, glu

MATMULS = ("auto", "grouped_mm", "loop")

_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_torch(a: torch.Tensor, w: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
  """Rows [ends[e-1], ends[e]) of a [M, D] times w[e] [D, N] -> [M, N] via torch's kernel."""
  if _GROUPED_MM is None:
    raise ValueError("matmul='grouped_mm' needs torch.nn.functional.grouped_mm or "
                     f"torch._grouped_mm, and torch {torch.__version__} has neither")
  return _GROUPED_MM(a, w, offs=ends)


def grouped_mm_loop(a: torch.Tensor, w: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
  """Same contract as `grouped_mm_torch`, one mm per non-empty group (one host read)."""
  pieces, start = [], 0
  for e, end in enumerate(ends.tolist()):
    if end > start:
      pieces.append(a[start:end] @ w[e])
    start = end
  if not pieces:
    return a.new_zeros(a.shape[0], w.shape[-1])
  return torch.cat(pieces, dim=0)


class Grouped(MoEModule):
  """Dropless sort + grouped GEMM MoE (see the module docstring for the pipeline)."""

  name = "grouped"
  OPTIONS = ("matmul",)

  def __init__(self, state_dict, opts: MoEOptions, *, matmul: str = "auto"):
    super().__init__(state_dict, opts)
    if matmul not in MATMULS:
      raise ValueError(f"matmul must be one of {list(MATMULS)}, got {matmul!r}")
    self.matmul = matmul

  def extra_repr(self) -> str:
    return super().extra_repr() + f", matmul={self.matmul!r}"

  def _mm(self, x2: torch.Tensor):
    choice = self.matmul
    if choice == "auto":
      aligned = self.hidden_size % 8 == 0 and self.intermediate_size % 8 == 0
      fast = (x2.is_cuda and x2.dtype == torch.bfloat16 and aligned
              and _GROUPED_MM is not None)
      choice = "grouped_mm" if fast else "loop"
    return grouped_mm_torch if choice == "grouped_mm" else grouped_mm_loop

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    r = self._route(x2)
    ex = self.experts
    t, k = r.indices.shape
    e, h = self.num_experts, self.hidden_size
    m = t * k
    mm = self._mm(x2)
    flat = r.indices.reshape(-1)                                             # [M]
    expert_sorted, order = torch.sort(flat, stable=True)                     # [M], [M]
    experts = torch.arange(e, device=x2.device, dtype=expert_sorted.dtype)   # [E]
    ends = torch.searchsorted(expert_sorted, experts, right=True).to(torch.int32)  # [E]

    xs = x2.index_select(0, order.div(k, rounding_mode="floor"))             # [M, H]
    gu = mm(xs, ex.gate_up_proj, ends)                                       # [M, 2I]
    # In place: neither GEMM's backward needs its output.
    gu = gu.add_(ex.gate_up_proj_bias.index_select(0, expert_sorted))       # [M, 2I]
    out = mm(glu(gu, self.opts), ex.down_proj, ends)                         # [M, H]

    inverse = torch.empty_like(order).scatter_(
        0, order, torch.arange(m, device=x2.device))                        # [M]
    out = out.index_select(0, inverse).view(t, k, h)                         # [T, K, H]
    y = torch.bmm(r.weights.unsqueeze(1), out).squeeze(1)                    # [T, H]
    y = torch.addmm(y, r.scores, ex.down_proj_bias)                          # [T, H]
    tokens_per_expert = torch.diff(ends, prepend=ends.new_zeros(1)).to(torch.int64)  # [E]
    return {**self._routing_stages(r), "y": y, "tokens_per_expert": tokens_per_expert}
