"""CUDA checks for `grouped` (run with `pytest -m gpu` on the GPU machine).

On bfloat16 CUDA inputs, "auto" must pick torch's grouped GEMM and the forward must
not synchronise with the host; the result must stay close to float32 binned_loop
(the bf16 tolerance of test_bf16.py, same reason).
"""
from __future__ import annotations

import pytest
import torch

import moe_torch_ref as mtr
from moe_torch_ref import grouped

from . import _helpers as hp

pytestmark = pytest.mark.gpu


def test_grouped_bf16_cuda_runs_grouped_mm_without_host_sync():
  if not torch.cuda.is_available():
    pytest.fail("torch sees no CUDA device")
  x = hp.inputs()
  ref = mtr.create("binned_loop", hp.state_dict(), top_k=hp.K).stages(x)
  module = mtr.create("grouped", hp.state_dict(dtype="bfloat16"), top_k=hp.K).cuda()
  xc = x.to(device="cuda", dtype=torch.bfloat16).requires_grad_(True)
  assert module._mm(xc) is grouped.grouped_mm_torch  # pylint: disable=protected-access
  module(xc)  # warm-up: lazy initialisation may synchronise
  torch.cuda.synchronize()
  torch.cuda.set_sync_debug_mode("error")
  try:
    y, _ = module(xc)
  finally:
    torch.cuda.set_sync_debug_mode("default")
  err = (y.float().cpu() - ref["y"]).norm() / ref["y"].norm()
  assert err <= 2e-2, f"normwise relative error {err:.3g}"
  y.float().sum().backward()
  assert torch.isfinite(xc.grad.float()).all()
  assert all(torch.isfinite(p.grad.float()).all() for p in module.parameters())
