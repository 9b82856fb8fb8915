"""Metrics, bitwise and top-k verdicts, and the tolerance tables."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import compare, tolerances
from parity.tolerances import Tolerance

TOPK = Tolerance(kind="topk", abs_scaled=1e-3, reason="test")
CLOSE = Tolerance(kind="close", rel_fro=1e-3, abs_scaled=1e-3, reason="test")


def test_metrics_match_float64_numpy_and_do_not_depend_on_chunking(monkeypatch):
  gen = torch.Generator().manual_seed(0)
  b = torch.randn(1000, generator=gen)
  b[:10] = 1e-9  # below REL_FLOOR * max|b|: left out of max_rel
  a = b + 1e-3 * torch.randn(1000, generator=gen)
  an, bn = a.double().numpy(), b.double().numpy()
  big = np.abs(bn) >= compare.REL_FLOOR * np.abs(bn).max()
  want = (np.abs(an - bn).max(), (np.abs(an - bn)[big] / np.abs(bn)[big]).max(),
          np.linalg.norm(an - bn) / np.linalg.norm(bn), np.abs(bn).max())
  np.testing.assert_allclose(compare.metrics(a, b), want, rtol=1e-12)
  monkeypatch.setattr(compare, "CHUNK", 7)
  np.testing.assert_allclose(compare.metrics(a, b), want, rtol=1e-12)


def test_close_gates_rel_fro_and_scaled_max_abs():
  b = torch.ones(100)
  assert compare.compare_close(b * (1 + 5e-4), b, CLOSE).passed
  spike = b.clone()
  spike[3] += 0.05  # rel_fro 5e-3 and abs 5e-2
  verdict = compare.compare_close(spike, b, CLOSE)
  assert not verdict.passed and "rel_fro" in verdict.note
  nan = b.clone()
  nan[0] = float("nan")
  assert not compare.compare_close(nan, b, CLOSE).passed


def test_close_row_mask_leaves_rows_out():
  b = torch.ones(4, 3)
  a = b.clone()
  a[2] = 7.0
  assert not compare.compare_close(a, b, CLOSE).passed
  assert compare.compare_close(a, b, CLOSE, np.array([True, True, False, True])).passed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bitwise_sees_one_bit_and_signed_zero(dtype):
  b = torch.linspace(-1, 1, 64).to(dtype)
  assert compare.compare_bitwise(b.clone(), b).passed
  a = b.clone()
  a.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)[5] += 1  # one ulp
  verdict = compare.compare_bitwise(a, b)
  assert not verdict.passed and "1 of 64" in verdict.note
  z = torch.zeros(4, dtype=dtype)
  assert not compare.compare_bitwise(-z, z).passed
  assert not compare.compare_bitwise(b.float(), b.to(torch.float64)).passed


def _logits():
  # Row 0: experts 1 and 2 tie exactly. Row 1: 1 and 2 differ by 1e-4 (near-tie).
  # Row 2: 1 and 2 differ by 0.5 (a real difference).
  return np.array([[0.0, 1.0, 0.9, 0.9, -1.0],
                   [0.0, 1.0, 0.9, 0.9001, -1.0],
                   [0.0, 1.0, 0.4, 0.9, -1.0]], np.float32)


def test_topk_agreement_and_classes():
  s = _logits()
  jax_idx = compare.stable_topk(s, 2)  # [[1, 2], [1, 3], [1, 3]]
  ok = compare.compare_topk(jax_idx, jax_idx, s, TOPK, unspecified_ties=False)
  assert ok.verdict.passed and ok.agree.all()

  ref = jax_idx.copy()
  ref[0, 1] = 3  # exact tie broken towards the higher index by the reference
  bad = compare.compare_topk(jax_idx, ref, s, TOPK, unspecified_ties=False)
  assert not bad.verdict.passed and bad.counts["exact_tie_bad"] == 1
  tolerated = compare.compare_topk(jax_idx, ref, s, TOPK, unspecified_ties=True)
  assert tolerated.verdict.passed and tolerated.counts["exact_tie_ok"] == 1
  assert list(tolerated.agree) == [False, True, True]

  ref = jax_idx.copy()
  ref[1, 1] = 2  # gap 1e-4 <= 1e-3 * max|logit|
  near = compare.compare_topk(jax_idx, ref, s, TOPK, unspecified_ties=False)
  assert near.verdict.passed and near.counts["near_tie"] == 1

  ref = jax_idx.copy()
  ref[2, 1] = 2  # gap 0.5
  real = compare.compare_topk(jax_idx, ref, s, TOPK, unspecified_ties=False)
  assert not real.verdict.passed and real.counts["real"] == 1


def test_topk_blames_jax_for_its_own_tie_break():
  s = _logits()
  jax_idx = compare.stable_topk(s, 2)
  wrong = jax_idx.copy()
  wrong[0, 1] = 3  # JAX itself breaks row 0's tie towards the higher index
  out = compare.compare_topk(wrong, jax_idx, s, TOPK, unspecified_ties=True)
  assert not out.verdict.passed
  assert out.counts["jax_tie_break"] == 1 and out.counts["exact_tie_ok"] == 0


def test_every_table_covers_every_stage_with_a_reason():
  for name, table in tolerances.TOLERANCES.items():
    assert set(table) == set(tolerances.STAGES), name
    for stage, tol in table.items():
      assert tol.reason.strip(), (name, stage)
    assert table["dispatched"].kind == "bitwise"
  fp32, bf16 = tolerances.FLOAT32, tolerances.BFLOAT16
  for stage, tol in fp32.items():
    if tol.kind == "close":
      assert tol.rel_fro < bf16[stage].rel_fro, stage


def test_lookup_groups_gradient_stages():
  assert tolerances.stage_key("grad:router.bias") == "grad_router"
  assert tolerances.stage_key("grad:experts.down_proj") == "grad_experts"
  assert tolerances.lookup("float32", "default", "combine") is tolerances.FLOAT32_DEFAULT["combine"]
  assert tolerances.lookup("bfloat16", "bf16", "grad:x") is tolerances.BFLOAT16["grad_x"]
  with pytest.raises(ValueError, match="stage must be one of"):
    tolerances.stage_key("nonsense")
