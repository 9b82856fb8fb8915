"""bfloat16 smoke: each implementation, on bf16 weights and inputs, stays close to
float32 binned_loop on the float32 weights.

Tolerance: normwise relative error <= 2e-2 over tokens routed like the float32
reference. bf16 keeps 8 significand bits (unit roundoff 2^-9 ~ 2e-3); the weights,
the input and about six rounded intermediates (logits, gate_up, GLU, down, weighted
sum) each add ~2e-3, so ~1e-2 is the expected worst case (observed ~5e-3). Tokens
whose top-K set flips under bf16 rounding of near-tied logits are excluded; at least
90% must keep their routing.
"""
from __future__ import annotations

import pytest
import torch

import moe_torch_ref as mtr

from . import _helpers as hp

NORM_RTOL = 2e-2
MIN_SAME_ROUTING = 0.9


def _cases():
  for name in mtr.IMPLEMENTATIONS:
    yield pytest.param(name, {}, id=name)
  yield pytest.param("grouped", {"matmul": "grouped_mm"}, id="grouped[grouped_mm]")
  if "transformers" in mtr.IMPLEMENTATIONS:
    yield pytest.param("transformers", {"experts_implementation": "grouped_mm"},
                       id="transformers[grouped_mm]")


@pytest.mark.parametrize("name, kwargs", list(_cases()))
def test_bf16_close_to_float32(name, kwargs):
  x = hp.inputs()
  ref = mtr.create("binned_loop", hp.state_dict(), top_k=hp.K).stages(x)
  cf = hp.NO_DROP if name in mtr.CAPACITY_IMPLEMENTATIONS else None
  module = mtr.create(name, hp.state_dict(dtype="bfloat16"), top_k=hp.K, capacity_factor=cf,
                      **kwargs)
  x16 = x.to(torch.bfloat16).requires_grad_(True)
  st = module.stages(x16)
  assert st["y"].dtype == torch.bfloat16
  same = (st["expert_indices"].sort(dim=1).values
          == ref["expert_indices"].sort(dim=1).values).all(dim=1)
  assert same.float().mean() >= MIN_SAME_ROUTING
  err = (st["y"].float() - ref["y"])[same].norm() / ref["y"][same].norm()
  assert err <= NORM_RTOL, f"{name}: normwise relative error {err:.3g}"
  st["y"].float().sum().backward()  # bf16 autograd runs
  assert x16.grad is not None and torch.isfinite(x16.grad.float()).all()
