"""The catalogue holds every case the parity issue asks for, each with a small variant."""
from __future__ import annotations

import pytest

from parity import cases


def _by_name():
  return {c.name: c for c in cases.CATALOGUE}


def test_reference_notebook_case():
  c = _by_name()["notebook"]
  assert (c.experts, c.hidden, c.intermediate, c.top_k, c.batch, c.seq) == (128, 1152, 1152, 4, 1, 100)
  assert (c.dtype, c.scheme, c.input_seed, c.input_scale) == ("float32", "seed-notebook", 123, 0.1)
  assert c.dropless and c.router == "gpt_oss" and c.activation == "gpt_oss_glu"


def test_model_like_cases():
  by = _by_name()
  gpt = by["gpt-oss-20b"]
  assert (gpt.experts, gpt.hidden, gpt.intermediate, gpt.top_k) == (32, 2880, 2880, 4)
  mix = by["mixtral"]
  assert (mix.experts, mix.top_k, mix.hidden, mix.intermediate) == (8, 2, 1024, 4096)
  assert (mix.router, mix.normalize_topk, mix.activation, mix.scheme) == (
      "softmax_topk", True, "swiglu", "seed-notebook")  # seed-notebook: all biases zero
  bench = by["routing-bench"]
  assert (bench.experts, bench.top_k, bench.hidden, bench.stages) == (128, 2, 4096, "dispatch_combine")


def test_coverage_of_capacity_dtype_and_scheme():
  cat = cases.CATALOGUE
  assert {c.capacity_factor for c in cat} >= {None, 1.0, 0.5}
  assert {c.dtype for c in cat} == {"float32", "bfloat16"}
  assert {c.scheme for c in cat} == {"seed-notebook", "nonzero-bias"}
  for dtype in ("float32", "bfloat16"):
    assert any(c.dtype == dtype and not c.dropless for c in cat)
    assert any(c.dtype == dtype and c.dropless for c in cat)


@pytest.mark.parametrize("case", cases.CATALOGUE, ids=lambda c: c.name)
def test_small_variant_keeps_the_semantics(case):
  small = case.small_variant()
  for field in ("name", "experts", "top_k", "capacity_factor", "dtype", "scheme", "router",
                "activation", "stages", "tied_router", "input_seed"):
    assert getattr(small, field) == getattr(case, field), field
  # Small means seconds on a CPU: a few million weights, at most 512 tokens.
  assert 3 * small.experts * small.hidden * small.intermediate <= 4e6
  assert small.tokens <= 512


def test_select():
  assert [c.name for c in cases.select()] == list(cases.NAMES)
  assert [c.name for c in cases.select(["ties", "notebook"])] == ["notebook", "ties"]
  assert cases.select(["notebook"], small=True)[0].hidden == 64
  with pytest.raises(ValueError, match="unknown"):
    cases.select(["nope"])


def test_case_validation_names_the_field():
  with pytest.raises(ValueError, match="top_k must be <= experts"):
    cases.Case(name="x", batch=1, seq=1, hidden=8, intermediate=8, experts=2, top_k=3,
               capacity_factor=None, dtype="float32", scheme="seed-notebook",
               small=cases.SmallSizes(batch=1, seq=1, hidden=8, intermediate=8))
