"""Shared weights: generation recipes, RNG hygiene, file round trips and validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch

from moe_torch_ref import weights

CFG = weights.WeightConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=32,
                           dtype="float32")
CFG_BF16 = weights.WeightConfig(num_experts=8, top_k=2, hidden_size=64, intermediate_size=32,
                                dtype="bfloat16")


def _bits(t: torch.Tensor) -> torch.Tensor:
  """Raw bits, so that comparisons are bit-exact (NaN- and -0.0-safe)."""
  return t.view({torch.float32: torch.int32, torch.bfloat16: torch.int16}[t.dtype])


def _notebook_recipe(e, h, i):
  """The notebook's recipe, written out independently of `generate`."""
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(999)
    rw = torch.empty(e, h)
    torch.nn.init.kaiming_uniform_(rw)
    torch.manual_seed(777)
    gu = torch.empty(e, h, 2 * i).normal_(mean=0.0, std=0.02)
    dp = torch.empty(e, i, h).normal_(mean=0.0, std=0.02)
  return rw, gu, dp


@pytest.mark.parametrize("cfg", [CFG, CFG_BF16], ids=["float32", "bfloat16"])
def test_generate_names_shapes_dtypes(cfg):
  sd = weights.generate(cfg, "seed-notebook")
  assert tuple(sd) == weights.NAMES
  for name, shape in weights.expected_shapes(cfg).items():
    assert tuple(sd[name].shape) == shape, name
    assert sd[name].dtype == cfg.torch_dtype, name
  assert weights.expected_shapes(cfg)["experts.gate_up_proj"] == (8, 64, 64)
  assert weights.expected_shapes(cfg)["experts.down_proj"] == (8, 32, 64)


def test_seed_notebook_matches_the_notebook_recipe():
  sd = weights.generate(CFG, "seed-notebook")
  rw, gu, dp = _notebook_recipe(8, 64, 32)
  assert torch.equal(_bits(sd["router.weight"]), _bits(rw))
  assert torch.equal(_bits(sd["experts.gate_up_proj"]), _bits(gu))
  assert torch.equal(_bits(sd["experts.down_proj"]), _bits(dp))
  for name in weights.BIAS_NAMES:
    assert not sd[name].any(), f"{name} must be all zeros in seed-notebook"
  bf = weights.generate(CFG_BF16, "seed-notebook")
  assert torch.equal(_bits(bf["experts.down_proj"]), _bits(dp.to(torch.bfloat16)))


@pytest.mark.parametrize("cfg", [CFG, CFG_BF16], ids=["float32", "bfloat16"])
def test_nonzero_bias_scheme(cfg):
  plain = weights.generate(cfg, "seed-notebook")
  biased = weights.generate(cfg, "nonzero-bias")
  for name in weights.NAMES:
    if name in weights.BIAS_NAMES:
      assert (biased[name] != 0).all(), f"{name} has an exact zero"
    else:
      assert torch.equal(_bits(biased[name]), _bits(plain[name])), name
  std = biased["experts.gate_up_proj_bias"].float().std().item()
  assert 0.01 < std < 0.04, std  # drawn with std 0.02
  again = weights.generate(cfg, "nonzero-bias")
  for name in weights.NAMES:
    assert torch.equal(_bits(again[name]), _bits(biased[name])), name


def test_generate_leaves_global_rng_alone():
  torch.manual_seed(1234)
  expected = torch.rand(5)
  torch.manual_seed(1234)
  weights.generate(CFG, "nonzero-bias")
  assert torch.equal(torch.rand(5), expected)


def test_unknown_scheme_lists_valid_ones():
  with pytest.raises(ValueError, match=r"seed-notebook.*nonzero-bias.*got 'zeros'"):
    weights.generate(CFG, "zeros")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_experts=0), "num_experts must be an int >= 1, got 0"),
    (dict(top_k=9), r"top_k must be in \[1, num_experts=8\], got 9"),
    (dict(dtype="float16"), r"dtype must be one of \['bfloat16', 'float32'\], got 'float16'"),
    (dict(hidden_size=64.0), "hidden_size must be an int >= 1, got 64.0"),
    (dict(swiglu_limit=0.0), "swiglu_limit must be a finite number > 0, got 0.0"),
])
def test_config_validation(kwargs, match):
  base = dict(num_experts=8, top_k=2, hidden_size=64, intermediate_size=32, dtype="float32")
  with pytest.raises(ValueError, match=match):
    weights.WeightConfig(**{**base, **kwargs})


@pytest.mark.parametrize("cfg", [CFG, CFG_BF16], ids=["float32", "bfloat16"])
def test_round_trip_is_bit_exact(tmp_path, cfg):
  sd = weights.generate(cfg, "nonzero-bias")
  before = {n: t.clone() for n, t in sd.items()}
  path = tmp_path / "w.safetensors"
  weights.save(path, sd, cfg)
  assert weights.sidecar_path(path) == tmp_path / "w.safetensors.json"
  meta = json.loads((tmp_path / "w.safetensors.json").read_text())
  assert meta["config"] == cfg.to_json()
  loaded, loaded_cfg = weights.load(path)
  assert loaded_cfg == cfg
  assert tuple(sorted(loaded)) == tuple(sorted(weights.NAMES))
  for name in weights.NAMES:
    assert loaded[name].dtype == cfg.torch_dtype
    assert torch.equal(_bits(loaded[name]), _bits(sd[name])), name
    assert torch.equal(_bits(sd[name]), _bits(before[name])), f"save modified {name}"


def test_save_accepts_numpy_and_does_not_modify_it(tmp_path):
  sd = {n: t.numpy() for n, t in weights.generate(CFG, "nonzero-bias").items()}
  copies = {n: a.copy() for n, a in sd.items()}
  weights.save(tmp_path / "w.safetensors", sd, CFG)
  loaded, _ = weights.load(tmp_path / "w.safetensors")
  for name in weights.NAMES:
    np.testing.assert_array_equal(sd[name], copies[name])
    assert loaded[name].numpy().tobytes() == copies[name].tobytes(), name


def test_save_accepts_ml_dtypes_bfloat16(tmp_path):
  ml_dtypes = pytest.importorskip("ml_dtypes")
  sd = weights.generate(CFG_BF16, "nonzero-bias")
  as_np = {n: t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) for n, t in sd.items()}
  weights.save(tmp_path / "w.safetensors", as_np, CFG_BF16)
  loaded, _ = weights.load(tmp_path / "w.safetensors")
  for name in weights.NAMES:
    assert torch.equal(_bits(loaded[name]), _bits(sd[name])), name


def _write_raw(tmp_path, tensors):
  """A good file's sidecar next to a safetensors file holding `tensors`."""
  path = tmp_path / "bad.safetensors"
  weights.save(path, weights.generate(CFG, "seed-notebook"), CFG)
  safetensors.torch.save_file({n: t.contiguous() for n, t in tensors.items()}, str(path))
  return path


def test_load_rejects_missing_tensor(tmp_path):
  sd = weights.generate(CFG, "seed-notebook")
  del sd["router.bias"]
  with pytest.raises(ValueError, match=r"bad\.safetensors does not match config E=8 K=2 H=64 "
                                       r"I=32 dtype=float32:\n  missing: router\.bias$"):
    weights.load(_write_raw(tmp_path, sd))


def test_load_rejects_wrong_shape(tmp_path):
  sd = weights.generate(CFG, "seed-notebook")
  sd["experts.down_proj"] = sd["experts.down_proj"].transpose(1, 2)
  with pytest.raises(ValueError, match=r"wrong shape: experts\.down_proj expected "
                                       r"\(8, 32, 64\), got \(8, 64, 32\)$"):
    weights.load(_write_raw(tmp_path, sd))


def test_load_rejects_wrong_dtype(tmp_path):
  sd = weights.generate(CFG, "seed-notebook")
  sd["router.weight"] = sd["router.weight"].to(torch.bfloat16)
  with pytest.raises(ValueError, match=r"wrong dtype: router\.weight expected float32, "
                                       r"got bfloat16$"):
    weights.load(_write_raw(tmp_path, sd))


def test_load_reports_every_problem_at_once(tmp_path):
  sd = weights.generate(CFG, "seed-notebook")
  del sd["router.bias"]
  sd["experts.down_proj"] = sd["experts.down_proj"].transpose(1, 2)
  sd["experts.gate_up_proj_bias"] = sd["experts.gate_up_proj_bias"].double()
  sd["stray"] = torch.zeros(3)
  with pytest.raises(ValueError) as err:
    weights.load(_write_raw(tmp_path, sd))
  lines = str(err.value).splitlines()[1:]
  assert lines == [
      "  missing: router.bias",
      "  extra: stray",
      "  wrong dtype: experts.gate_up_proj_bias expected float32, got float64",
      "  wrong shape: experts.down_proj expected (8, 32, 64), got (8, 64, 32)",
  ]


def test_save_validates_and_load_needs_sidecar(tmp_path):
  sd = weights.generate(CFG, "seed-notebook")
  with pytest.raises(ValueError, match=r"state_dict does not match config .*\n  wrong dtype: "):
    weights.save(tmp_path / "w.safetensors", sd, CFG_BF16)
  assert not (tmp_path / "w.safetensors").exists()
  safetensors.torch.save_file(sd, str(tmp_path / "plain.safetensors"))
  with pytest.raises(FileNotFoundError, match=r"plain\.safetensors\.json not found"):
    weights.load(tmp_path / "plain.safetensors")
