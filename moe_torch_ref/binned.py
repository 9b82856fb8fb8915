"""Binned (capacity-based) MoE: the reference notebook's algorithm, loop and vectorised.

Token-slots (flat index t*K + k) are sorted by expert with a STABLE sort, so within
an expert the earliest slots come first; each expert takes at most C of them into
an [E, C, H] buffer and the rest are dropped (they contribute nothing to y). Both
experts matmuls are bmm over that buffer, and the combine writes each kept slot's
weighted output back to (t, k) before summing over k.

Two corrections to the notebook: C = ceil(capacity_factor * T * K / E) with T all
tokens (the notebook used the batch size), and the sort is stable. With
capacity_factor=None nothing drops: C = the largest number of slots on one expert.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from moe_torch_ref._common import MoEModule, capacity, glu


def _capacity(module: MoEModule, tokens_per_expert: torch.Tensor, num_tokens: int) -> int:
  cf = module.opts.capacity_factor
  if cf is None:
    return int(tokens_per_expert.max())  # host sync; only on the dropless path
  return capacity(cf, num_tokens, module.top_k, module.num_experts)


def _experts_mlp(module: MoEModule, dispatched: torch.Tensor) -> torch.Tensor:
  """[E, C, H] -> [E, C, H]: per-expert GLU MLP, biases included (also on empty slots)."""
  ex = module.experts
  h = torch.bmm(dispatched, ex.gate_up_proj) + ex.gate_up_proj_bias[:, None, :]  # [E, C, 2I]
  a = glu(h, module.opts)                                                         # [E, C, I]
  return torch.bmm(a, ex.down_proj) + ex.down_proj_bias[:, None, :]               # [E, C, H]


class BinnedLoop(MoEModule):
  """The notebook's binned implementation, with Python loops over experts and slots.

  Slow and simple on purpose: it is the oracle for every other implementation.
  Differentiable (the slot copies are in-place tensor writes autograd tracks).
  """

  name = "binned_loop"
  dropless_only = False

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    r = self._route(x2)
    t, k = r.indices.shape
    e, h = self.num_experts, self.hidden_size
    flat = r.indices.reshape(-1)                                   # [M]
    order = torch.sort(flat, stable=True).indices                  # [M] slots by expert
    tokens_per_expert = torch.bincount(flat, minlength=e)          # [E]
    bins = torch.cumsum(tokens_per_expert, 0)                      # [E] inclusive ends
    c = _capacity(self, tokens_per_expert, t)
    order_l, bins_l = order.tolist(), bins.tolist()

    dispatched = x2.new_zeros(e, c, h)                             # [E, C, H]
    dropped = torch.zeros(t * k, dtype=torch.bool, device=x2.device)
    for ex in range(e):
      start = 0 if ex == 0 else bins_l[ex - 1]
      for i in range(bins_l[ex] - start):
        pos = order_l[start + i]
        if i >= c:
          dropped[pos] = True
        else:
          dispatched[ex, i] = x2[pos // k]

    expert_out = _experts_mlp(self, dispatched)                    # [E, C, H]

    w_flat = r.weights.reshape(-1)                                 # [M]
    combined = x2.new_zeros(t, k, h)                               # [T, K, H]
    for ex in range(e):
      start = 0 if ex == 0 else bins_l[ex - 1]
      for i in range(min(bins_l[ex] - start, c)):
        pos = order_l[start + i]
        combined[pos // k, pos % k] = expert_out[ex, i] * w_flat[pos]
    y = combined.sum(dim=1)                                        # [T, H]
    return {**self._routing_stages(r), "y": y, "dispatched": dispatched,
            "expert_out": expert_out, "dropped": dropped.view(t, k), "capacity": c,
            "tokens_per_expert": tokens_per_expert}


class Binned(MoEModule):
  """Vectorised binned MoE: same semantics and bits as `binned_loop`, no Python loops.

  Gather and combine are index_select over precomputed slot maps. With a capacity
  factor there is no host sync; capacity_factor=None reads the largest expert load
  once to size the buffer.
  """

  name = "binned"
  dropless_only = False

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    r = self._route(x2)
    t, k = r.indices.shape
    e, h = self.num_experts, self.hidden_size
    m = t * k
    dev = x2.device
    flat = r.indices.reshape(-1)                                   # [M]
    sorted_e, order = torch.sort(flat, stable=True)                # [M], [M]
    tokens_per_expert = torch.zeros(e, dtype=torch.int64, device=dev).scatter_add_(
        0, flat, torch.ones_like(flat))                            # [E]
    starts = torch.cumsum(tokens_per_expert, 0) - tokens_per_expert  # [E] exclusive
    rank = torch.arange(m, device=dev) - starts[sorted_e]          # [M] position in its expert
    c = _capacity(self, tokens_per_expert, t)
    keep_sorted = rank < c                                         # [M]
    dest_sorted = sorted_e * c + rank                              # [M] row of the [E*C] buffer

    # Buffer row -> source token, T (a zero row) for empty rows; dropped slots are
    # sent to a dump row E*C that is cut off.
    src = torch.full((e * c + 1,), t, dtype=torch.int64, device=dev)
    src.scatter_(0, torch.where(keep_sorted, dest_sorted, e * c), order // k)
    x_pad = F.pad(x2, (0, 0, 0, 1))                                # [T+1, H]
    dispatched = x_pad.index_select(0, src[: e * c]).view(e, c, h)  # [E, C, H]

    expert_out = _experts_mlp(self, dispatched)                    # [E, C, H]

    # Slot (t, k) -> its buffer row; unsort by scattering through `order`.
    keep = torch.empty_like(keep_sorted).scatter_(0, order, keep_sorted)  # [M]
    dest = torch.empty_like(dest_sorted).scatter_(0, order, dest_sorted)  # [M]
    rows = expert_out.reshape(e * c, h).index_select(0, torch.where(keep, dest, 0))  # [M, H]
    contrib = torch.where(keep[:, None], rows * r.weights.reshape(m, 1), 0)          # [M, H]
    y = contrib.view(t, k, h).sum(dim=1)                           # [T, H]
    return {**self._routing_stages(r), "y": y, "dispatched": dispatched,
            "expert_out": expert_out, "dropped": ~keep.view(t, k), "capacity": c,
            "tokens_per_expert": tokens_per_expert}
