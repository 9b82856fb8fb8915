"""Backward: every implementation against gpt_oss_loop in float32, and grouped
against central finite differences in float64.

float32 tolerance rtol=1e-5, atol=1e-6: as for the forward, only summation order
differs (weight gradients sum over up to T=37 rows, input gradients over E*2I);
observed differences are <= 1e-6 on gradients of size up to ~5.
"""
from __future__ import annotations

import pytest
import torch

import moe_torch_ref as mtr
from moe_torch_ref import weights

from . import _helpers as hp

RTOL, ATOL = 1e-5, 1e-6


def _grads(name, sd, x, cotangent, **kwargs):
  cf = hp.NO_DROP if name in mtr.CAPACITY_IMPLEMENTATIONS else None
  module = mtr.create(name, sd, top_k=hp.K, capacity_factor=cf, **kwargs)
  x = x.clone().requires_grad_(True)
  y, _ = module(x)
  (y * cotangent).sum().backward()
  grads = {"x": x.grad}
  grads.update({n: p.grad for n, p in module.named_parameters()})
  return grads


def _cases():
  for name in mtr.IMPLEMENTATIONS:
    if name != "gpt_oss_loop":
      yield pytest.param(name, {}, id=name)
  yield pytest.param("grouped", {"matmul": "grouped_mm"}, id="grouped[grouped_mm]")
  yield pytest.param("grouped", {"router": "softmax_topk", "activation": "swiglu"},
                     id="grouped-softmax_topk+swiglu")


@pytest.mark.parametrize("name, kwargs", list(_cases()))
def test_gradients_match_gpt_oss_loop(name, kwargs):
  sd, x = hp.state_dict(), hp.inputs()
  cotangent = hp.inputs(seed=1)
  variant = {k: v for k, v in kwargs.items() if k != "matmul"}
  want = _grads("gpt_oss_loop", sd, x, cotangent, **variant)
  got = _grads(name, sd, x, cotangent, **kwargs)
  assert set(got) == {"x", *weights.NAMES}
  for key, ref in want.items():
    assert ref is not None and ref.abs().max() > 0, f"reference gradient {key} is empty"
    hp.assert_close(got[key], ref, rtol=RTOL, atol=ATOL, what=key)


def test_grouped_gradient_matches_finite_differences():
  e, k, h, i, t = 4, 2, 8, 4, 5
  sd = {n: v.double() for n, v in hp.state_dict(e=e, k=k, h=h, i=i).items()}
  module = mtr.create("grouped", sd, top_k=k)
  names = list(weights.NAMES)
  params = [p.detach().clone().requires_grad_(True) for p in
            (dict(module.named_parameters())[n] for n in names)]
  x = hp.inputs(t, h, seed=3).double().requires_grad_(True)

  def f(x, *ps):
    y, scores = torch.func.functional_call(module, dict(zip(names, ps)), (x,))
    return y, scores

  # fast_mode compares random projections u^T J v with directional finite differences
  # instead of all ~500 Jacobian columns.
  assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-5,
                                  fast_mode=True)
