"""`MoEConfig`: the one model config of the layer, frozen and validated."""
from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROUTERS = ("gpt_oss", "softmax_topk")
ACTIVATIONS = ("gpt_oss_glu", "swiglu")
from moe_jax.kernels import IMPLEMENTATIONS  # the one list of implementation names
_PRECISIONS = {
    None: None,
    "default": jax.lax.Precision.DEFAULT,
    "high": jax.lax.Precision.HIGH,
    "highest": jax.lax.Precision.HIGHEST,
}


def check_choice(name: str, value: Any, valid: tuple) -> None:
  """Raises a ValueError naming `name` unless `value` is one of `valid`."""
  if value not in valid:
    raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def check_implementation(implementation: str | None) -> None:
  check_choice("implementation", implementation, (None,) + IMPLEMENTATIONS)


def capacity_for(capacity_factor: float, num_tokens: int, top_k: int, num_experts: int) -> int:
  """Static per-expert capacity C = ceil(capacity_factor * T * K / E), at least 1.

  The product is exact on the decimal value of capacity_factor (its shortest repr, a
  NumPy float's in its own precision), so 1.1 * 10 / 1 gives 11, not the 12 of float
  rounding; moe_torch_ref uses the same rule, so both sides drop the same slots.
  """
  if isinstance(capacity_factor, jax.Array) and capacity_factor.ndim == 0:
    capacity_factor = np.asarray(capacity_factor)[()]  # a concrete JAX scalar: its NumPy twin
  _check_real("capacity_factor", capacity_factor, "a finite number > 0")
  for name, value, least in (("num_tokens", num_tokens, 0), ("top_k", top_k, 1),
                             ("num_experts", num_experts, 1)):
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not is_int or value < least:
      raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
  # A NumPy float's shortest decimal in its own precision: np.float32(1.1) is 1.1 here,
  # not the 1.100000023841858 it widens to.
  text = str(capacity_factor) if isinstance(capacity_factor, np.floating) else repr(
      float(capacity_factor))
  exact = fractions.Fraction(text) * num_tokens * top_k / num_experts
  return max(1, math.ceil(exact))


def _check_real(name: str, value: Any, expected: str) -> None:
  """Raises a ValueError naming `name` unless `value` is a finite real number > 0."""
  if (isinstance(value, (bool, np.bool_))
      or not isinstance(value, (int, float, np.integer, np.floating))
      or not math.isfinite(value) or not value > 0):
    raise ValueError(f"{name} must be {expected}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoEConfig:
  """Configuration of a GPT-OSS-style (or Mixtral-style) MoE layer.

  Attributes:
    num_experts: E.
    top_k: K, experts per token, in [1, E].
    hidden_size: H, the model dimension.
    intermediate_size: I, each expert's GLU width (gate_up has 2I columns).
    capacity_factor: C = ceil(capacity_factor * T * K / E) slots per expert; slots
      beyond C are dropped (the earliest token-slots win). None means dropless.
    router: "gpt_oss" (top-k over logits, softmax over the k values) or
      "softmax_topk" (softmax over E, then top-k, renormalised if normalize_topk).
    normalize_topk: renormalise the top-k probabilities to sum 1 ("softmax_topk" only).
    activation: "gpt_oss_glu" (clamped, alpha, +1 on up) or "swiglu" (silu(gate)*up).
    swiglu_alpha: the GPT-OSS GLU's sigmoid scale.
    swiglu_limit: the GPT-OSS GLU's clamp limit.
    dtype: computation dtype of activations and matmul operands.
    param_dtype: dtype of freshly initialised parameters.
    implementation: "xla", "pallas" or None (pallas on GPU, xla elsewhere) for the
      router's top-k ("gpt_oss"), the dispatch, the gather/scatter ops and the grouped
      matmuls. With a capacity, "pallas" also runs
      the experts on grouped row tiles of the kept slots where that layout fits in E*C
      rows (`moe_jax.forward.layer_dispatch`); "xla" runs padded [E, C] einsums.
    precision: matmul precision: None, "default", "high" or "highest". fp32 parity
      runs use "highest" (JAX's default fp32 matmul on GPU may use TF32).
  """
  num_experts: int
  top_k: int
  hidden_size: int
  intermediate_size: int
  capacity_factor: float | None = 1.25
  router: str = "gpt_oss"
  normalize_topk: bool = True
  activation: str = "gpt_oss_glu"
  swiglu_alpha: float = 1.702
  swiglu_limit: float = 7.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  implementation: str | None = None
  precision: str | None = None

  def __post_init__(self):
    for name in ("num_experts", "top_k", "hidden_size", "intermediate_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
      object.__setattr__(self, name, int(value))  # np.int64(8) -> 8: hashable, static
      if name != "top_k" and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if not 1 <= self.top_k <= self.num_experts:
      raise ValueError(
          f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
    if self.capacity_factor is not None:
      _check_real("capacity_factor", self.capacity_factor, "a finite number > 0, or None for "
                  "dropless")
    check_choice("router", self.router, ROUTERS)
    if not isinstance(self.normalize_topk, (bool, np.bool_)):
      raise ValueError(f"normalize_topk must be a bool, got {self.normalize_topk!r}")
    check_choice("activation", self.activation, ACTIVATIONS)
    check_implementation(self.implementation)
    check_choice("precision", self.precision, tuple(_PRECISIONS))
    _check_real("swiglu_alpha", self.swiglu_alpha, "a finite number > 0")
    _check_real("swiglu_limit", self.swiglu_limit, "a finite number > 0")
    for name in ("dtype", "param_dtype"):
      try:
        dt = jnp.dtype(getattr(self, name))
      except TypeError:
        raise ValueError(f"{name} must be a floating dtype, got {getattr(self, name)!r}") from None
      if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype, got {dt}")
      object.__setattr__(self, name, dt)

  @property
  def lax_precision(self) -> jax.lax.Precision | None:
    return _PRECISIONS[self.precision]

  def capacity(self, num_tokens: int) -> int | None:
    """The static capacity C for T = num_tokens, or None in dropless mode."""
    if self.capacity_factor is None:
      return None
    return capacity_for(self.capacity_factor, num_tokens, self.top_k, self.num_experts)
