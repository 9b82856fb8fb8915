"""The MoE stages as stand-alone PyTorch ops, for the component benchmarks.

Each mirrors the stage of `moe_torch_ref` (binned: stable sort, capacity, [E, C, H]
buffer; dropless: expert-sorted [M, H] rows and a grouped GEMM) with the same
semantics as moe_jax's stage functions, so the two frameworks' outputs compare
directly. No op reads a value back to the host, except the grouped GEMM's "loop"
path (fp32 or CPU), which reads the group ends once per GEMM, as moe_torch_ref does.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from moe_torch_ref.ops import HAS_GROUPED_MM, MoEOptions, glu, grouped_mm_loop, grouped_mm_torch


class BinnedMeta(NamedTuple):
  """Slot layout of a binned dispatch (M = T*K slots, flat index t*K + k)."""
  src: torch.Tensor   # [E*C] source token of each buffer row, T for an empty row
  dest: torch.Tensor  # [M] buffer row of each slot (0 where dropped)
  keep: torch.Tensor  # [M] bool, False for slots over capacity


class DroplessMeta(NamedTuple):
  """Slot layout of a dropless dispatch."""
  order: torch.Tensor          # [M] slot ids sorted by expert (stable)
  sorted_experts: torch.Tensor  # [M] expert of each sorted row
  ends: torch.Tensor           # [E] int32 cumulative group ends
  inverse: torch.Tensor        # [M] sorted row of each slot


def binned_meta(indices: torch.Tensor, num_experts: int, capacity: int) -> BinnedMeta:
  """Stable sort by expert, position within expert, capacity cut: [T, K] -> BinnedMeta."""
  t, k = indices.shape
  m = t * k
  flat = indices.reshape(m).long()
  sorted_e, order = torch.sort(flat, stable=True)                          # [M], [M]
  counts = torch.bincount(flat, minlength=num_experts)                     # [E]
  starts = torch.cumsum(counts, 0) - counts                                # [E]
  rank = torch.arange(m, device=flat.device) - starts[sorted_e]            # [M] sorted order
  keep_sorted = rank < capacity
  dest_sorted = sorted_e * capacity + rank
  rows = num_experts * capacity
  src = torch.full((rows + 1,), t, dtype=torch.long, device=flat.device)
  src.scatter_(0, torch.where(keep_sorted, dest_sorted, rows), order // k)
  keep = torch.empty_like(keep_sorted).scatter_(0, order, keep_sorted)     # [M] slot order
  dest = torch.empty_like(dest_sorted).scatter_(0, order, dest_sorted)
  return BinnedMeta(src=src[:rows], dest=torch.where(keep, dest, 0), keep=keep)


def dropless_meta(indices: torch.Tensor, num_experts: int) -> DroplessMeta:
  """Stable sort by expert: [T, K] -> DroplessMeta."""
  flat = indices.reshape(-1).long()
  m = flat.numel()
  sorted_e, order = torch.sort(flat, stable=True)
  experts = torch.arange(num_experts, device=flat.device, dtype=sorted_e.dtype)
  ends = torch.searchsorted(sorted_e, experts, right=True).to(torch.int32)  # [E]
  inverse = torch.empty_like(order).scatter_(0, order, torch.arange(m, device=flat.device))
  return DroplessMeta(order=order, sorted_experts=sorted_e, ends=ends, inverse=inverse)


def pack_binned(x: torch.Tensor, indices: torch.Tensor, num_experts: int, capacity: int
                ) -> torch.Tensor:
  """Dispatch metadata + gather: x [T, H] -> [E, C, H]; empty rows are zero."""
  meta = binned_meta(indices, num_experts, capacity)
  x_pad = F.pad(x, (0, 0, 0, 1))                                           # [T+1, H], row T = 0
  return x_pad.index_select(0, meta.src).view(num_experts, capacity, x.shape[1])


def pack_dropless(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
  """Dispatch metadata + gather: x [T, H] -> expert-sorted rows [M, H]."""
  k = indices.shape[1]
  order = torch.sort(indices.reshape(-1).long(), stable=True).indices
  return x.index_select(0, torch.div(order, k, rounding_mode="floor"))


def combine_binned(buf: torch.Tensor, meta: BinnedMeta, weights: torch.Tensor) -> torch.Tensor:
  """y[t] = sum_k keep * w[t,k] * buf[row(t,k)]: [E, C, H] -> [T, H] (bmm over k)."""
  t, k = weights.shape
  h = buf.shape[-1]
  rows = buf.reshape(-1, h).index_select(0, meta.dest).view(t, k, h)     # [T, K, H]
  w = torch.where(meta.keep.view(t, k), weights, 0).to(buf.dtype)
  return torch.bmm(w.unsqueeze(1), rows).squeeze(1)                        # [T, H]


def combine_dropless(rows: torch.Tensor, meta: DroplessMeta, weights: torch.Tensor
                     ) -> torch.Tensor:
  """Unsort and weight: expert-sorted [M, H] -> [T, H] (bmm over k)."""
  t, k = weights.shape
  h = rows.shape[-1]
  per_slot = rows.index_select(0, meta.inverse).view(t, k, h)             # [T, K, H]
  return torch.bmm(weights.to(rows.dtype).unsqueeze(1), per_slot).squeeze(1)


def experts_binned(buf, gate_up, gate_up_bias, down, down_bias, opts: MoEOptions):
  """Expert MLPs over [E, C, H] with bmm; biases included."""
  hmid = torch.bmm(buf, gate_up) + gate_up_bias[:, None, :]               # [E, C, 2I]
  return torch.bmm(glu(hmid, opts), down) + down_bias[:, None, :]          # [E, C, H]


def grouped_matmul(rows: torch.Tensor) -> str:
  """Which grouped GEMM `experts_grouped` uses: torch's grouped_mm or a per-expert loop."""
  fast = (rows.is_cuda and rows.dtype == torch.bfloat16 and HAS_GROUPED_MM)
  return "grouped_mm" if fast else "loop"


def experts_grouped(rows, meta: DroplessMeta, gate_up, gate_up_bias, down, down_bias,
                    opts: MoEOptions):
  """Expert MLPs over expert-sorted rows [M, H] with a grouped GEMM; biases included."""
  mm = (grouped_mm_torch if grouped_matmul(rows) == "grouped_mm" else grouped_mm_loop)
  hmid = mm(rows, gate_up, meta.ends) + gate_up_bias.index_select(0, meta.sorted_experts)
  out = mm(glu(hmid, opts), down, meta.ends)
  return out + down_bias.index_select(0, meta.sorted_experts)              # [M, H]
