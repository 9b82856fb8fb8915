"""Shared MoE weights: deterministic generation, safetensors files and validation.

Every implementation, in PyTorch and in JAX, is built from the same six tensors,
named and laid out as in the Hugging Face transformers GPT-OSS MLP:

  router.weight              [E, H]
  router.bias                [E]
  experts.gate_up_proj       [E, H, 2I]  gate in even columns, up in odd columns
  experts.gate_up_proj_bias  [E, 2I]     same interleaving
  experts.down_proj          [E, I, H]
  experts.down_proj_bias     [E, H]

A weights file is a safetensors file plus a JSON sidecar at `<path>.json` (the full
file name with `.json` appended, e.g. `w.safetensors.json`) that holds the
`WeightConfig` and a description of the expected tensors. The sidecar is the
authority for validation; the safetensors header carries no metadata.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.torch
import torch

FORMAT = "moe-jax-weights"
FORMAT_VERSION = 1

NAMES = (
    "router.weight",
    "router.bias",
    "experts.gate_up_proj",
    "experts.gate_up_proj_bias",
    "experts.down_proj",
    "experts.down_proj_bias",
)
BIAS_NAMES = ("router.bias", "experts.gate_up_proj_bias", "experts.down_proj_bias")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SCHEMES = ("seed-notebook", "nonzero-bias")

# Seeds of the reference notebook: router weights, then expert weights.
ROUTER_SEED = 999
EXPERT_SEED = 777
# Seed of the private generator that draws the "nonzero-bias" biases.
BIAS_SEED = 20250917
# Bias scales for "nonzero-bias". Expert biases match the expert weights' std;
# the router bias is on the scale of router logits for inputs of std ~0.1 (the
# notebook's inputs), so it shifts routing without dominating it.
EXPERT_BIAS_STD = 0.02
ROUTER_BIAS_STD = 0.1


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightConfig:
  """Sizes and dtype of one MoE layer's weights.

  Attributes:
    num_experts: E, number of experts.
    top_k: K, experts per token; 1 <= K <= E.
    hidden_size: H, model width.
    intermediate_size: I, expert MLP width (gate_up has 2I columns).
    dtype: "float32" or "bfloat16", the dtype of every tensor.
    swiglu_alpha: sigmoid gain of the GPT-OSS GLU.
    swiglu_limit: clamp limit of the GPT-OSS GLU.
  """

  num_experts: int
  top_k: int
  hidden_size: int
  intermediate_size: int
  dtype: str
  swiglu_alpha: float = 1.702
  swiglu_limit: float = 7.0

  def __post_init__(self):
    for name in ("num_experts", "top_k", "hidden_size", "intermediate_size"):
      value = getattr(self, name)
      if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if self.top_k > self.num_experts:
      raise ValueError(
          f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
    for name in ("swiglu_alpha", "swiglu_limit"):
      value = getattr(self, name)
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

  @property
  def torch_dtype(self) -> torch.dtype:
    return DTYPES[self.dtype]

  def describe(self) -> str:
    """Short form used in messages, e.g. `E=8 K=2 H=64 I=32 dtype=float32`."""
    return (f"E={self.num_experts} K={self.top_k} H={self.hidden_size} "
            f"I={self.intermediate_size} dtype={self.dtype}")

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> WeightConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
      raise ValueError(f"config has unknown fields {unknown}; expected a subset of {sorted(fields)}")
    return cls(**data)


def expected_shapes(config: WeightConfig) -> dict[str, tuple[int, ...]]:
  """Shape of each of the six tensors for `config`, keyed by name."""
  e, h, i = config.num_experts, config.hidden_size, config.intermediate_size
  return {
      "router.weight": (e, h),
      "router.bias": (e,),
      "experts.gate_up_proj": (e, h, 2 * i),
      "experts.gate_up_proj_bias": (e, 2 * i),
      "experts.down_proj": (e, i, h),
      "experts.down_proj_bias": (e, h),
  }


def _dtype_name(value: Any) -> str:
  if isinstance(value, torch.Tensor):
    return str(value.dtype).removeprefix("torch.")
  return np.asarray(value).dtype.name


def problems(state_dict: Mapping[str, Any], config: WeightConfig) -> list[str]:
  """Every mismatch between `state_dict` and `config`, one line each (empty if none)."""
  shapes = expected_shapes(config)
  lines = [f"missing: {name}" for name in NAMES if name not in state_dict]
  lines += [f"extra: {name}" for name in sorted(set(state_dict) - set(NAMES))]
  for name in NAMES:
    if name not in state_dict:
      continue
    value = state_dict[name]
    got = tuple(value.shape)
    if got != shapes[name]:
      lines.append(f"wrong shape: {name} expected {shapes[name]}, got {got}")
    if _dtype_name(value) != config.dtype:
      lines.append(f"wrong dtype: {name} expected {config.dtype}, got {_dtype_name(value)}")
  return lines


def check(state_dict: Mapping[str, Any], config: WeightConfig, *, what: str = "state_dict") -> None:
  """Raises one ValueError listing every problem of `state_dict` against `config`.

  Args:
    state_dict: name -> torch tensor or numpy array.
    config: the sizes and dtype the tensors must have.
    what: how the message names the checked object, e.g. "weights file w.safetensors".
  """
  found = problems(state_dict, config)
  if found:
    body = "\n".join(f"  {line}" for line in found)
    raise ValueError(f"{what} does not match config {config.describe()}:\n{body}")


def generate(config: WeightConfig, scheme: str = "seed-notebook") -> dict[str, torch.Tensor]:
  """Deterministic weights for `config`, drawn in float32 and cast to `config.dtype`.

  "seed-notebook" reproduces the reference notebook: seed 999, router weight
  kaiming_uniform_ (default arguments); seed 777, gate_up then down ~ N(0, 0.02);
  every bias zero. "nonzero-bias" has the same weights, and biases drawn from a
  private generator seeded with BIAS_SEED: router bias ~ N(0, ROUTER_BIAS_STD^2),
  then gate_up bias and down bias ~ N(0, EXPERT_BIAS_STD^2); an element that is
  exactly zero (after the cast) is replaced by the std, so no bias element is 0.
  The caller's global RNG state is left unchanged.

  Args:
    config: sizes and dtype.
    scheme: one of SCHEMES.

  Returns:
    Dict of the six tensors (CPU, contiguous, `config.dtype`), keyed by NAMES.

  Example:
    >>> cfg = WeightConfig(num_experts=8, top_k=2, hidden_size=64,
    ...                    intermediate_size=32, dtype="float32")
    >>> sd = generate(cfg, "nonzero-bias")
  """
  if scheme not in SCHEMES:
    raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
  e, h, i = config.num_experts, config.hidden_size, config.intermediate_size
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(ROUTER_SEED)
    router_weight = torch.empty(e, h, dtype=torch.float32)
    torch.nn.init.kaiming_uniform_(router_weight)
    torch.manual_seed(EXPERT_SEED)
    gate_up = torch.empty(e, h, 2 * i, dtype=torch.float32).normal_(0.0, 0.02)
    down = torch.empty(e, i, h, dtype=torch.float32).normal_(0.0, 0.02)
  out = {
      "router.weight": router_weight,
      "router.bias": torch.zeros(e),
      "experts.gate_up_proj": gate_up,
      "experts.gate_up_proj_bias": torch.zeros(e, 2 * i),
      "experts.down_proj": down,
      "experts.down_proj_bias": torch.zeros(e, h),
  }
  stds = {}
  if scheme == "nonzero-bias":
    gen = torch.Generator().manual_seed(BIAS_SEED)
    stds = {"router.bias": ROUTER_BIAS_STD, "experts.gate_up_proj_bias": EXPERT_BIAS_STD,
            "experts.down_proj_bias": EXPERT_BIAS_STD}
    for name in BIAS_NAMES:
      out[name] = torch.empty_like(out[name]).normal_(0.0, stds[name], generator=gen)
  dtype = config.torch_dtype
  out = {name: value.to(dtype).contiguous() for name, value in out.items()}
  for name, std in stds.items():
    # Probability ~0 for a normal draw, but the promise is "no exact zero".
    out[name] = torch.where(out[name] == 0, torch.tensor(std, dtype=dtype), out[name])
  return out


def sidecar_path(path: str | os.PathLike) -> pathlib.Path:
  """The JSON sidecar of a weights file: the full name with `.json` appended."""
  path = pathlib.Path(path)
  return path.with_name(path.name + ".json")


def _to_torch(value: Any) -> torch.Tensor:
  """A CPU contiguous tensor with `value`'s data; numpy input is copied first."""
  if isinstance(value, torch.Tensor):
    return value.detach().to("cpu").contiguous()
  arr = np.asarray(value)
  if arr.dtype.name == "bfloat16":  # ml_dtypes, e.g. from JAX
    return torch.from_numpy(np.array(arr.view(np.uint16), copy=True)).view(torch.bfloat16)
  return torch.from_numpy(np.array(arr, copy=True, order="C"))


def save(path: str | os.PathLike, state_dict: Mapping[str, Any], config: WeightConfig) -> None:
  """Writes `state_dict` to `path` (safetensors) and its sidecar `<path>.json`.

  The tensors are validated against `config` first; the inputs are never modified.

  Args:
    path: target safetensors file; its parent must exist.
    state_dict: the six tensors (torch tensors or numpy arrays, incl. ml_dtypes bfloat16).
    config: sizes and dtype, stored in the sidecar.
  """
  path = pathlib.Path(path)
  check(state_dict, config)
  tensors = {name: _to_torch(state_dict[name]) for name in NAMES}
  sidecar = {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
      "config": config.to_json(),
      "layout": "transformers GPT-OSS: gate_up_proj [E,H,2I] with gate in even and up in odd "
                "columns; down_proj [E,I,H]; y = x @ W + b",
      "tensors": {name: {"shape": list(shape), "dtype": config.dtype}
                  for name, shape in expected_shapes(config).items()},
  }
  tmp = path.with_name(path.name + ".tmp")
  safetensors.torch.save_file(tensors, str(tmp))
  os.replace(tmp, path)
  sidecar_path(path).write_text(json.dumps(sidecar, indent=2) + "\n")


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], WeightConfig]:
  """Reads a weights file written by `save` and validates it against its sidecar.

  Args:
    path: the safetensors file; `<path>.json` must exist next to it.

  Returns:
    (state_dict of CPU tensors keyed by NAMES, WeightConfig).

  Raises:
    FileNotFoundError: the file or its sidecar is missing.
    ValueError: the sidecar is malformed, or (one error listing all of them) a tensor
      is missing, extra, or has the wrong shape or dtype.
  """
  path = pathlib.Path(path)
  side = sidecar_path(path)
  if not side.exists():
    raise FileNotFoundError(f"weights sidecar {side} not found (expected next to {path})")
  meta = json.loads(side.read_text())
  if meta.get("format") != FORMAT:
    raise ValueError(f"{side} must have format={FORMAT!r}, got {meta.get('format')!r}")
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{side} must have format_version={FORMAT_VERSION}, "
                     f"got {meta.get('format_version')!r}")
  config = WeightConfig.from_json(meta["config"])
  state_dict = safetensors.torch.load_file(str(path))
  check(state_dict, config, what=f"weights file {path}")
  return state_dict, config
