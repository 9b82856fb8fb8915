"""Parity figures: relative error, capacity keep codes, near-tie flips, the router oracle."""
import numpy as np
import pytest
import torch

from bench import parity


def test_rel_err():
  b = np.array([1.0, -4.0, 2.0])
  assert parity.rel_err(b, b) == 0.0
  assert parity.rel_err(b + [0.0, 0.0, 0.4], b) == pytest.approx(0.1)
  assert parity.rel_err(np.array([np.nan, 0, 0]), b) == float("inf")
  assert parity.rel_err(b[:2], b) == float("inf")


def test_keep_codes_earliest_slots_win():
  # expert 0 is chosen by tokens 0, 1, 2; capacity 2 drops token 2's slot.
  idx = np.array([[0, 1], [2, 0], [0, 3]])
  codes = parity.keep_codes(idx, 4, capacity=2)
  np.testing.assert_array_equal(codes, [[0, 1], [0, 2], [3, 4]])  # 4 = 0 + E: dropped
  np.testing.assert_array_equal(parity.keep_codes(idx, 4, None), np.sort(idx, 1))


def _router(n=6, h=4, e=5, seed=0):
  rng = np.random.default_rng(seed)
  return dict(sub=np.arange(n), x=rng.normal(size=(n, h)), router_weight=rng.normal(size=(e, h)),
              router_bias=np.zeros(e))


def test_identical_outputs_pass():
  router = _router()
  ref = parity.routing_oracle(router, 2, None)
  y = np.ones((6, 3))
  out = parity.compare(dict(indices=ref["indices"], y=y), dict(indices=ref["indices"], y=y),
                       component="layer", dtype="float32", num_experts=5, capacity=None,
                       router=router)
  assert out["parity_ok"] and out["parity_rel_err"] == 0.0
  assert out["routing_mismatch_frac"] == 0.0 and out["parity_unexplained_flips"] == 0


def test_flip_without_near_tie_fails_and_is_excluded_from_error():
  router = _router()
  ref = parity.routing_oracle(router, 2, None)
  wrong = ref["indices"].copy()
  logits = router["x"] @ router["router_weight"].T
  worst = np.argsort(logits[0])[0]  # token 0 takes its lowest-scoring expert: no near-tie
  wrong[0, 1] = worst if worst != wrong[0, 0] else np.argsort(logits[0])[1]
  y_ref = np.ones((6, 3))
  y = y_ref.copy()
  y[0] += 100.0  # the flipped token differs, but it is not compared
  out = parity.compare(dict(indices=wrong, y=y), dict(indices=ref["indices"], y=y_ref),
                       component="layer", dtype="float32", num_experts=5, capacity=None,
                       router=router)
  assert out["parity_rel_err"] == 0.0
  assert out["parity_unexplained_flips"] == 1 and out["parity_ok"] is False
  assert out["routing_mismatch_frac"] == pytest.approx(1 / 6)


def test_near_tie_flip_is_explained():
  router = _router()
  router["x"] = np.abs(router["x"])
  router["router_weight"][0] = np.abs(router["router_weight"][0]) + 5.0  # top for every token
  router["router_weight"][1] = router["router_weight"][0] * (1 + 1e-9)  # its near twin
  ref = parity.routing_oracle(router, 1, None)
  assert np.all(ref["indices"] == 1)
  twin = np.zeros_like(ref["indices"])  # every token takes the twin: all near-ties
  y = np.ones((6, 2))
  out = parity.compare(dict(indices=twin, y=y), dict(indices=ref["indices"], y=y),
                       component="layer", dtype="float32", num_experts=5, capacity=None,
                       router=router)
  assert out["routing_mismatch_frac"] == 1.0
  assert out["parity_unexplained_flips"] == 0 and out["parity_ok"]


def test_pack_must_be_bitwise():
  a = np.ones((4, 2), np.float32)
  out = parity.compare(dict(out=a), dict(out=a + 1e-7), component="pack", dtype="float32",
                       num_experts=2, capacity=None, router=None)
  assert out["parity_ok"] is False
  out = parity.compare(dict(out=a), dict(out=a + 1e-7), component="combine", dtype="float32",
                       num_experts=2, capacity=None, router=None)
  assert out["parity_ok"] is True


def test_routing_oracle_gradient_matches_torch_float64():
  router = _router(n=7, h=6, e=5, seed=3)
  dw = np.random.default_rng(4).normal(size=(7, 2))
  ref = parity.routing_oracle(router, 2, dw)
  x = torch.tensor(router["x"], requires_grad=True)
  logits = x @ torch.tensor(router["router_weight"]).T
  top, idx = torch.topk(logits, 2)
  w = torch.softmax(top, -1)
  (dx,) = torch.autograd.grad(w, x, torch.tensor(dw))
  np.testing.assert_array_equal(ref["indices"], idx.numpy())
  np.testing.assert_allclose(ref["weights"], w.detach().numpy(), rtol=1e-12)
  np.testing.assert_allclose(ref["dx"], dx.numpy(), rtol=1e-10, atol=1e-12)


def test_reference_candidates_cross_frameworks():
  assert parity.reference_candidates("jax", "layer", "binned", "pallas/binned")[0] == (
      "torch", "binned")
  assert parity.reference_candidates("torch", "layer", "dropless", "grouped")[0] == (
      "jax", "xla/dropless")
  same = parity.reference_candidates("torch", "layer", "binned", "binned")
  assert ("torch", "binned") not in same and ("torch", "binned_loop") in same
