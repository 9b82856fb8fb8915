"""The one module that converts weights between frameworks and layouts.

Names follow Hugging Face transformers' GPT-OSS MLP: `router.weight`, `router.bias`,
`experts.gate_up_proj`, `experts.gate_up_proj_bias`, `experts.down_proj`,
`experts.down_proj_bias`, optionally under an `mlp.` (or `...mlp.`) prefix.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from moe_jax.forward import MoEParams

STATE_DICT_NAMES = (
    "router.weight",
    "router.bias",
    "experts.gate_up_proj",
    "experts.gate_up_proj_bias",
    "experts.down_proj",
    "experts.down_proj_bias",
)  # in MoEParams field order


def to_numpy(value: Any) -> np.ndarray:
  """A torch tensor (bf16 included), jax array or numpy array as a numpy array (a copy)."""
  if hasattr(value, "detach"):  # a torch.Tensor; torch is imported only when one arrives
    import torch
    t = value.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bf16: reinterpret the bits
      return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()
  return np.array(value, copy=True)


def _strip_prefix(mapping: Mapping[str, Any]) -> dict[str, Any]:
  """Drops any prefix that ends in `mlp.` (e.g. `mlp.`, `model.layers.0.mlp.`)."""
  out = {}
  for key, value in mapping.items():
    short = key.split("mlp.", 1)[1] if "mlp." in key else key
    if short in out:
      raise ValueError(f"state dict has two entries for {short!r} (one is {key!r})")
    out[short] = value
  return out


def params_from_state_dict(mapping: Mapping[str, Any], dtype: Any | None = None) -> MoEParams:
  """MoEParams from a GPT-OSS MLP state dict (torch, numpy or jax values).

  Args:
    mapping: the six names of STATE_DICT_NAMES, with or without an `mlp.` prefix.
    dtype: cast every tensor to this dtype; None keeps each tensor's dtype.

  Raises:
    ValueError listing every missing or unexpected name.
  """
  flat = _strip_prefix(mapping)
  missing = [n for n in STATE_DICT_NAMES if n not in flat]
  extra = sorted(set(flat) - set(STATE_DICT_NAMES))
  if missing or extra:
    raise ValueError(f"state dict must hold exactly {STATE_DICT_NAMES}; "
                     f"missing: {missing or 'none'}; unexpected: {extra or 'none'}")
  arrays = []
  for name in STATE_DICT_NAMES:
    arr = jnp.asarray(to_numpy(flat[name]))
    arrays.append(arr.astype(dtype) if dtype is not None else arr)
  return MoEParams(*arrays)


def params_to_state_dict(params: MoEParams, prefix: str = "") -> dict[str, np.ndarray]:
  """The inverse of params_from_state_dict: numpy arrays (writable copies) under
  transformers names."""
  # np.array copies: np.asarray of a jax.Array is a read-only view of its buffer, which
  # torch.from_numpy warns about and in-place edits fail on.
  return {prefix + name: np.array(value) for name, value in zip(STATE_DICT_NAMES, params)}


def infer_sizes(params: MoEParams) -> dict[str, int]:
  """E, H and I from the parameter shapes."""
  e, h = params.router_weight.shape
  return dict(num_experts=e, hidden_size=h, intermediate_size=params.down_proj.shape[1])


def sidecar_path(path: str | os.PathLike) -> str:
  """The JSON sidecar `<path>.json` written beside a weights file by moe_torch_ref.weights.save."""
  return os.fspath(path) + ".json"


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32,
}


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a safetensors file into numpy, bf16 included (safetensors.numpy has no bf16).

  The format is an 8-byte little-endian header length, a JSON header mapping each
  name to its dtype, shape and byte range, then the raw little-endian data.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    # Any other file read this way gives a nonsense length (often terabytes).
    if size < 8 or header_len > size - 8:
      raise ValueError(f"{path!r} is not a safetensors file: its first 8 bytes give a "
                       f"header of {header_len} bytes, but the file holds {size} bytes")
    try:
      header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path!r} is not a safetensors file: its header is not JSON "
                       f"({e})") from None
    data = f.read()
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path!r}: tensor {name!r} has unsupported dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    dt = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
    out[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(info["shape"]).copy()
  return out


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
  """Reads a weights file and its JSON sidecar config (an empty dict if there is none)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file {path!r} does not exist")
  tensors = _load_safetensors(path)
  meta = {}
  if os.path.exists(sidecar_path(path)):
    with open(sidecar_path(path)) as f:
      meta = json.load(f)
    meta = meta.get("config", meta)
  return tensors, meta
