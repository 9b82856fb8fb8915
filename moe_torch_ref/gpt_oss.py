"""The GPT-OSS reference paths: dense inference (every token through every expert)
and the training loop over the experts that were hit. Both are dropless."""
from __future__ import annotations

from typing import Any

import torch

from moe_torch_ref._common import MoEModule, glu


class GptOssDense(MoEModule):
  """GPT-OSS inference path: bmm of all T tokens through all E experts, weighted by
  the dense router scores (zero for unchosen experts) and summed over E.

  Costs E/K times the routed work and [E, T, 2I] memory; a baseline, not a contender.
  """

  name = "gpt_oss_dense"

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    r = self._route(x2)
    ex = self.experts
    t, e = x2.shape[0], self.num_experts
    xs = x2.unsqueeze(0).expand(e, t, self.hidden_size)                      # [E, T, H]
    h = torch.bmm(xs, ex.gate_up_proj) + ex.gate_up_proj_bias[:, None, :]   # [E, T, 2I]
    a = glu(h, self.opts)                                                    # [E, T, I]
    o = torch.bmm(a, ex.down_proj) + ex.down_proj_bias[:, None, :]          # [E, T, H]
    y = (o * r.scores.transpose(0, 1)[..., None]).sum(dim=0)                 # [T, H]
    return {**self._routing_stages(r), "y": y}


class GptOssLoop(MoEModule):
  """GPT-OSS training path: loop over the experts that were hit, gather their tokens,
  run the expert MLP and index_add_ the weighted output into y. Host-syncs per expert."""

  name = "gpt_oss_loop"

  def _compute(self, x2: torch.Tensor) -> dict[str, Any]:
    r = self._route(x2)
    ex = self.experts
    y = torch.zeros_like(x2)                                                 # [T, H]
    with torch.no_grad():
      mask = torch.nn.functional.one_hot(r.indices, self.num_experts).permute(2, 1, 0)  # [E, K, T]
      hit = torch.greater(mask.sum(dim=(1, 2)), 0).nonzero()[:, 0].tolist()
    for e in hit:
      k_pos, tok = torch.where(mask[e])                                      # [n], [n]
      h = x2[tok] @ ex.gate_up_proj[e] + ex.gate_up_proj_bias[e]             # [n, 2I]
      out = glu(h, self.opts) @ ex.down_proj[e] + ex.down_proj_bias[e]       # [n, H]
      y.index_add_(0, tok, out * r.weights[tok, k_pos, None])
    return {**self._routing_stages(r), "y": y}
