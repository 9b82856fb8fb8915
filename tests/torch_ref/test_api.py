"""The public surface: registry, capacity formula, argument validation, copying."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import moe_torch_ref as mtr

from . import _helpers as hp

DROPLESS = [n for n in mtr.IMPLEMENTATIONS if n not in mtr.CAPACITY_IMPLEMENTATIONS]


def test_registry():
  expected = ("binned_loop", "binned", "gpt_oss_dense", "gpt_oss_loop", "grouped")
  assert mtr.IMPLEMENTATIONS[:5] == expected
  assert set(mtr.IMPLEMENTATIONS) - set(expected) <= {"transformers"}
  assert mtr.CAPACITY_IMPLEMENTATIONS == ("binned_loop", "binned")
  assert {"binned_loop", "binned", "gpt_oss_loop", "grouped"} <= set(mtr.VARIANT_IMPLEMENTATIONS)


@pytest.mark.parametrize("cf, t, k, e, want", [
    (1.0, 37, 2, 8, 10),     # 9.25 -> 10
    (0.5, 37, 2, 8, 5),      # 4.625 -> 5
    (1.25, 100, 4, 128, 4),  # the notebook's config: 3.906 -> 4
    (1.0, 64, 2, 8, 16),     # exact, no rounding up
    (1.1, 10, 1, 1, 11),     # float 1.1 * 10 = 11.000000000000002; the decimal gives 11
    (4.0, 37, 2, 8, 37),     # E/K -> T
    (0.01, 1, 1, 128, 1),
])
def test_capacity_formula(cf, t, k, e, want):
  assert mtr.capacity(cf, t, k, e) == want
  assert want == math.ceil(round(cf * t * k / e, 9))


def test_capacity_reads_numpy_floats_at_their_own_precision():
  # The same rule as moe_jax.capacity_for, so both sides drop the same slots.
  import moe_jax
  for cf in (np.float32(1.1), np.float64(1.1), np.float32(1.25), np.float16(0.5)):
    assert mtr.capacity(cf, 10, 1, 1) == moe_jax.capacity_for(cf, 10, 1, 1)
  assert mtr.capacity(np.float32(1.1), 10, 1, 1) == 11


@pytest.mark.parametrize("cf", [0, -1.0, float("nan"), float("inf"), None, True])
def test_capacity_rejects_bad_factor(cf):
  with pytest.raises(ValueError, match="capacity_factor must be a finite number > 0"):
    mtr.capacity(cf, 10, 2, 8)


def test_unknown_implementation_lists_valid_names():
  with pytest.raises(ValueError, match=r"one of \['binned_loop', 'binned', .*got 'megablocks'"):
    mtr.create("megablocks", hp.state_dict(), top_k=2)


@pytest.mark.parametrize("name", DROPLESS)
def test_dropless_implementations_reject_capacity_factor(name):
  with pytest.raises(ValueError, match=rf"'{name}' is dropless: capacity_factor must be None, "
                                       r"got 1\.25"):
    mtr.create(name, hp.state_dict(), top_k=2, capacity_factor=1.25)


@pytest.mark.parametrize("top_k", [0, 9])
def test_top_k_range(top_k):
  match = r"top_k must be an int >= 1, got 0" if top_k == 0 else r"top_k must be in \[1, E=8\], got 9"
  with pytest.raises(ValueError, match=match):
    mtr.create("grouped", hp.state_dict(), top_k=top_k)


@pytest.mark.parametrize("kwargs, match", [
    (dict(router="topk"), r"router must be one of \['gpt_oss', 'softmax_topk'\], got 'topk'"),
    (dict(activation="gelu"), r"activation must be one of .*got 'gelu'"),
    (dict(capacity_factor=-1.0), r"capacity_factor must be None or a finite number > 0, got -1\.0"),
    (dict(matmul="cublas"), r"matmul must be one of \['auto', 'grouped_mm', 'loop'\], got 'cublas'"),
    (dict(experts_implementation="eager"), r"accepts options \['matmul'\], got unknown "
                                          r"\['experts_implementation'\]"),
])
def test_option_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtr.create("grouped", hp.state_dict(), top_k=2, **kwargs)


@pytest.mark.skipif("transformers" not in mtr.IMPLEMENTATIONS, reason="transformers missing")
def test_transformers_rejects_variants_and_unknown_experts_implementation():
  with pytest.raises(ValueError, match="supports only router='gpt_oss'"):
    mtr.create("transformers", hp.state_dict(), top_k=2, activation="swiglu")
  with pytest.raises(ValueError, match=r"experts_implementation must be one of \['eager', .*"
                                       r"got 'fast'"):
    mtr.create("transformers", hp.state_dict(), top_k=2, experts_implementation="fast")


def test_state_dict_validation_lists_every_problem():
  sd = hp.state_dict()
  del sd["router.bias"]
  sd["extra.thing"] = torch.zeros(1)
  with pytest.raises(ValueError, match=r"exactly the six GPT-OSS weights:\n  missing: router\.bias"
                                       r"\n  extra: extra\.thing"):
    mtr.create("binned", sd, top_k=2)
  sd = hp.state_dict()
  sd["experts.gate_up_proj"] = sd["experts.gate_up_proj"][:, :, :-2]
  sd["experts.down_proj_bias"] = sd["experts.down_proj_bias"].double()
  with pytest.raises(ValueError) as err:
    mtr.create("binned", sd, top_k=2)
  assert "E=8 H=64 I=32" in str(err.value)
  assert "wrong shape: experts.gate_up_proj expected (8, 64, 64), got (8, 64, 62)" in str(err.value)
  assert "wrong dtype: experts.down_proj_bias expected torch.float32" in str(err.value)


@pytest.mark.parametrize("name", mtr.IMPLEMENTATIONS)
def test_input_validation(name):
  module = mtr.create(name, hp.state_dict(), top_k=2)
  with pytest.raises(ValueError, match=r"x must have shape \[T, H\] or \[B, S, H\] with H=64, "
                                       r"got shape \(5, 63\)"):
    module(torch.zeros(5, 63))
  with pytest.raises(ValueError, match=r"x must have dtype torch\.float32 \(the weights' dtype\), "
                                       r"got torch\.bfloat16"):
    module(torch.zeros(5, 64, dtype=torch.bfloat16))


@pytest.mark.parametrize("name", mtr.IMPLEMENTATIONS)
def test_create_copies_weights(name):
  sd = hp.state_dict()
  as_numpy = {n: t.numpy() for n, t in sd.items()}
  snapshot = {n: a.copy() for n, a in as_numpy.items()}
  for source in (sd, as_numpy):
    module = mtr.create(name, source, top_k=2)
    with torch.no_grad():
      for p in module.parameters():
        p.add_(1.0)
    for n, a in as_numpy.items():
      np.testing.assert_array_equal(a, snapshot[n], err_msg=n)
  # The module's own state_dict carries the shared names.
  assert set(mtr.create(name, sd, top_k=2).state_dict()) == set(sd)
