"""Forward values of every implementation against binned_loop, and binned_loop
against an independent float64 numpy MoE.

Tolerance for float32 against binned_loop: rtol=1e-5, atol=1e-6. The implementations
compute the same sums in different orders (bmm, mm, grouped GEMM, index_add_ vs
sum), and float32 reductions over H=64 or I=32 terms differ by at most ~H * 2^-24
~ 4e-6 relative in the worst case (observed ~1e-7). |y| is ~0.06 here, so atol is
~2e-5 of the output scale: a wrong expert, weight, bias or dropped slot moves y by
orders of magnitude more.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import moe_torch_ref as mtr
from moe_torch_ref import weights

from . import _helpers as hp
from . import _numpy_ref

RTOL, ATOL = 1e-5, 1e-6
VARIANTS = {
    "gpt_oss": {},
    "softmax_topk+swiglu": {"router": "softmax_topk", "activation": "swiglu"},
    "softmax_topk_unnormalized": {"router": "softmax_topk", "normalize_topk": False},
}


def _build(name, sd, *, drop_free=True, **kwargs):
  cf = hp.NO_DROP if (drop_free and name in mtr.CAPACITY_IMPLEMENTATIONS) else None
  return mtr.create(name, sd, top_k=hp.K, capacity_factor=cf, **kwargs)


def _cases():
  for variant, kwargs in VARIANTS.items():
    names = mtr.IMPLEMENTATIONS if variant == "gpt_oss" else mtr.VARIANT_IMPLEMENTATIONS
    for name in names:
      yield pytest.param(name, kwargs, id=f"{name}-{variant}")
  if "transformers" in mtr.IMPLEMENTATIONS:
    for impl in ("grouped_mm", "batched_mm"):
      yield pytest.param("transformers", {"experts_implementation": impl},
                         id=f"transformers[{impl}]-gpt_oss")
  yield pytest.param("grouped", {"matmul": "grouped_mm"}, id="grouped[grouped_mm]-gpt_oss")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("capacity_factor", [None, 0.5, 1.25])
def test_binned_loop_matches_float64_numpy(variant, capacity_factor):
  sd, x = hp.state_dict(), hp.inputs()
  kwargs = VARIANTS[variant]
  st = mtr.create("binned_loop", sd, top_k=hp.K, capacity_factor=capacity_factor,
                  **kwargs).stages(x)
  cap = None if capacity_factor is None else mtr.capacity(capacity_factor, hp.T, hp.K, hp.E)
  ref = _numpy_ref.moe(x.double().numpy(), hp.to_numpy(sd), top_k=hp.K, capacity=cap,
                       router=kwargs.get("router", "gpt_oss"),
                       normalize_topk=kwargs.get("normalize_topk", True),
                       activation=kwargs.get("activation", "gpt_oss_glu"))
  np.testing.assert_array_equal(st["expert_indices"].numpy(), ref["indices"])
  np.testing.assert_array_equal(st["dropped"].numpy(), ref["dropped"])
  if capacity_factor == 0.5:
    assert ref["dropped"].any(), "capacity 0.5 must drop something"
  hp.assert_close(st["expert_weights"], ref["weights"], rtol=RTOL, atol=ATOL)
  hp.assert_close(st["y"], ref["y"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name, kwargs", list(_cases()))
def test_matches_binned_loop_without_drops(name, kwargs):
  sd, x = hp.state_dict(), hp.inputs()
  variant = {k: v for k, v in kwargs.items() if k not in ("matmul", "experts_implementation")}
  ref = _build("binned_loop", sd, **variant).stages(x)
  assert not ref["dropped"].any() and ref["capacity"] <= hp.T
  module = _build(name, sd, **kwargs)
  st = module.stages(x)
  assert torch.equal(st["expert_indices"], ref["expert_indices"])
  assert st["expert_indices"].dtype == torch.int64
  hp.assert_close(st["router_logits"], ref["router_logits"], rtol=RTOL, atol=ATOL)
  hp.assert_close(st["expert_weights"], ref["expert_weights"], rtol=RTOL, atol=ATOL)
  hp.assert_close(st["y"], ref["y"], rtol=RTOL, atol=ATOL, what=name)
  # forward: [B, S, H] in, same shape out; dense scores.
  y, scores = module(x.view(1, hp.T, hp.H))
  assert y.shape == (1, hp.T, hp.H) and scores.shape == (hp.T, hp.E)
  hp.assert_close(y.view(hp.T, hp.H), ref["y"], rtol=RTOL, atol=ATOL)
  hp.assert_close(scores, ref["router_scores"], rtol=RTOL, atol=ATOL)
  assert ((scores != 0).sum(dim=1) == hp.K).all()
  np.testing.assert_allclose(scores.sum(dim=1).detach().numpy(),
                             ref["expert_weights"].sum(dim=1).detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.25])
def test_binned_equals_binned_loop_with_drops(capacity_factor):
  sd, x = hp.state_dict(), hp.inputs()
  loop = mtr.create("binned_loop", sd, top_k=hp.K, capacity_factor=capacity_factor).stages(x)
  fast = mtr.create("binned", sd, top_k=hp.K, capacity_factor=capacity_factor).stages(x)
  c = mtr.capacity(capacity_factor, hp.T, hp.K, hp.E)
  assert loop["capacity"] == fast["capacity"] == c
  assert fast["dispatched"].shape == fast["expert_out"].shape == (hp.E, c, hp.H)
  load = torch.bincount(loop["expert_indices"].reshape(-1), minlength=hp.E)
  assert int(loop["dropped"].sum()) == int((load - c).clamp(min=0).sum())
  if capacity_factor == 0.5:
    assert loop["dropped"].any()
  for key in ("dropped", "tokens_per_expert", "dispatched", "expert_out", "y"):
    assert torch.equal(fast[key], loop[key]), key  # same ops on the same bits


def test_binned_without_capacity_drops_nothing():
  sd, x = hp.state_dict(), hp.inputs()
  st = mtr.create("binned", sd, top_k=hp.K).stages(x)
  assert not st["dropped"].any()
  assert st["capacity"] == int(st["tokens_per_expert"].max())
  ref = mtr.create("gpt_oss_dense", sd, top_k=hp.K).stages(x)
  hp.assert_close(st["y"], ref["y"], rtol=RTOL, atol=ATOL)


def _tied_state_dict():
  """Router weight zero, bias with exact ties: logits equal the bias for every token."""
  sd = hp.state_dict()
  sd["router.weight"] = torch.zeros(hp.E, hp.H)
  sd["router.bias"] = torch.tensor([0.0, 1.0, 3.0, 3.0, 1.0, 3.0, 0.0, 2.0])
  return sd


TIE_IMPLEMENTATIONS = [n for n in mtr.IMPLEMENTATIONS if n != "transformers"]  # uses torch.topk


@pytest.mark.parametrize("name", TIE_IMPLEMENTATIONS)
@pytest.mark.parametrize("router", ["gpt_oss", "softmax_topk"])
def test_router_ties_go_to_the_lower_index(name, router):
  expected = {1: [2], 2: [2, 3], 3: [2, 3, 5], 4: [2, 3, 5, 7]}
  x = hp.inputs(t=5)
  for k, want in expected.items():
    cf = hp.E / k if name in mtr.CAPACITY_IMPLEMENTATIONS else None
    st = mtr.create(name, _tied_state_dict(), top_k=k, capacity_factor=cf,
                    router=router).stages(x)
    assert st["expert_indices"].tolist() == [want] * 5, (k, st["expert_indices"].tolist())
  # Ties through the weights: rows 1 and 4 equal, x of small integers (exact dot products).
  sd = hp.state_dict()
  sd["router.weight"] = torch.zeros(hp.E, hp.H)
  sd["router.weight"][[1, 4]] = 1.0
  sd["router.bias"] = torch.zeros(hp.E)
  x = torch.randint(1, 4, (3, hp.H)).float()
  cf = hp.NO_DROP if name in mtr.CAPACITY_IMPLEMENTATIONS else None
  st = mtr.create(name, sd, top_k=1, capacity_factor=cf, router=router).stages(x)
  assert st["expert_indices"].tolist() == [[1]] * 3


@pytest.mark.skipif("transformers" not in mtr.IMPLEMENTATIONS, reason="transformers missing")
def test_transformers_adapter_runs_gptossmlp_forward():
  sd, x = hp.state_dict(), hp.inputs()
  module = mtr.create("transformers", sd, top_k=hp.K)
  y, scores = module(x.view(1, hp.T, hp.H))
  hf_y, hf_scores = module.hf_module(x.view(1, hp.T, hp.H))
  assert torch.equal(y, hf_y.view(y.shape))
  top = scores.gather(1, module.stages(x)["expert_indices"])
  assert torch.equal(top, hf_scores.view(top.shape)) or torch.equal(scores, hf_scores)
  assert dict(module.named_parameters()).keys() == set(weights.NAMES)


def _concentrated_state_dict():
  """Router weight zero, distinct biases: every token picks experts 5 then 2."""
  sd = hp.state_dict()
  sd["router.weight"] = torch.zeros(hp.E, hp.H)
  sd["router.bias"] = torch.tensor([0.1, 0.0, 2.0, 0.3, -1.0, 3.0, 0.2, -0.5])
  return sd


EDGE_CASES = {
    "one_token": (hp.state_dict, 1),
    "all_tokens_on_two_experts": (_concentrated_state_dict, hp.T),  # six experts empty
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("name", mtr.IMPLEMENTATIONS)
def test_edge_cases_against_numpy(name, case):
  make_sd, t = EDGE_CASES[case]
  sd, x = make_sd(), hp.inputs(t)
  factors = [None, 1.0] if name in mtr.CAPACITY_IMPLEMENTATIONS else [None]
  for cf in factors:
    st = mtr.create(name, sd, top_k=hp.K, capacity_factor=cf).stages(x)
    cap = None if cf is None else mtr.capacity(cf, t, hp.K, hp.E)
    ref = _numpy_ref.moe(x.double().numpy(), hp.to_numpy(sd), top_k=hp.K, capacity=cap)
    np.testing.assert_array_equal(st["expert_indices"].numpy(), ref["indices"])
    if cf is not None:
      np.testing.assert_array_equal(st["dropped"].numpy(), ref["dropped"])
      assert ref["dropped"].any() == (case == "all_tokens_on_two_experts")
    hp.assert_close(st["y"], ref["y"], rtol=RTOL, atol=ATOL, what=f"{name} cf={cf}")
