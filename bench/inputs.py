"""What every benchmark tensor is: shape, hash salt and scale, shared by both runners.

Both frameworks build their tensors from these specs (see `bench.hashgen`), so the
parity input (rotation 0) holds the same bits in JAX and PyTorch. The "notebook"
weight scheme instead reproduces the reference notebook's seeded weights and inputs.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from bench import hashgen
from bench.configs import BenchConfig

# The reference notebook's weight seed; the hash weights reuse it as their seed.
WEIGHT_SEED = 999
# Parity compares at most this many evenly spaced rows of an output.
PARITY_ROWS = 2048
# Rotated input sets are capped to this many bytes in all (at least 2 sets).
ROTATION_BYTES = 2 << 30

_X_SCALE = hashgen.scale_log2_for_std(0.1)  # inputs ~ the notebook's 0.1 * randn
_W_SCALE = hashgen.scale_log2_for_std(0.02)  # expert weights ~ N(0, 0.02) in the notebook
_G_SCALE = hashgen.scale_log2_for_std(0.5)  # cotangents


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorSpec:
  """One hash tensor: values = level(seed, salt, index) * 2**-scale_log2.

  Attributes:
    shape: the tensor's shape.
    seed: hash seed.
    salt: hash salt (distinguishes tensors of one seed).
    scale_log2: power-of-two exponent of the scale.
    float32: True for tensors kept in float32 whatever the config dtype (routing
      weights and their cotangents).
  """
  shape: tuple[int, ...]
  seed: int
  salt: int
  scale_log2: int
  float32: bool = False

  @property
  def numel(self) -> int:
    return math.prod(self.shape)


def capacity(cfg: BenchConfig) -> int:
  """C = ceil(capacity_factor * T * K / E), via moe_torch_ref's exact decimal rule."""
  from moe_torch_ref import capacity as _capacity  # pylint: disable=import-outside-toplevel
  return _capacity(cfg.capacity_factor, cfg.num_tokens, cfg.top_k, cfg.num_experts)


def weight_specs(cfg: BenchConfig) -> dict[str, TensorSpec]:
  """The six GPT-OSS weights. The router weight follows kaiming-uniform's std sqrt(2/H)."""
  e, h, i = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
  router_scale = hashgen.scale_log2_for_std(math.sqrt(2.0 / h))

  def spec(shape, salt, scale):
    return TensorSpec(shape=shape, seed=WEIGHT_SEED, salt=salt, scale_log2=scale)

  return {
      "router.weight": spec((e, h), 1, router_scale),
      "router.bias": spec((e,), 2, _X_SCALE),
      "experts.gate_up_proj": spec((e, h, 2 * i), 3, _W_SCALE),
      "experts.gate_up_proj_bias": spec((e, 2 * i), 4, _W_SCALE),
      "experts.down_proj": spec((e, i, h), 5, _W_SCALE),
      "experts.down_proj_bias": spec((e, h), 6, _W_SCALE),
  }


def x_spec(cfg: BenchConfig, j: int) -> TensorSpec:
  """Input tokens [T, H] of rotation j."""
  return TensorSpec(shape=(cfg.num_tokens, cfg.hidden_size), seed=cfg.seed, salt=100 + j,
                    scale_log2=_X_SCALE)


def dy_spec(cfg: BenchConfig) -> TensorSpec:
  """Cotangent [T, H] of the layer or combine output (shared by all rotations)."""
  return TensorSpec(shape=(cfg.num_tokens, cfg.hidden_size), seed=cfg.seed, salt=200,
                    scale_log2=_G_SCALE)


def dw_spec(cfg: BenchConfig) -> TensorSpec:
  """Cotangent [T, K] float32 of the routing weights."""
  return TensorSpec(shape=(cfg.num_tokens, cfg.top_k), seed=cfg.seed, salt=201,
                    scale_log2=_G_SCALE, float32=True)


def rows_spec(cfg: BenchConfig, num_rows: int, j: int) -> TensorSpec:
  """Expert-side rows [R, H] of rotation j (R = E*C binned, M = T*K dropless)."""
  return TensorSpec(shape=(num_rows, cfg.hidden_size), seed=cfg.seed, salt=300 + j,
                    scale_log2=_X_SCALE)


def drows_spec(cfg: BenchConfig, num_rows: int) -> TensorSpec:
  """Cotangent [R, H] of expert-side rows (shared by all rotations)."""
  return TensorSpec(shape=(num_rows, cfg.hidden_size), seed=cfg.seed, salt=400,
                    scale_log2=_G_SCALE)


def routing(cfg: BenchConfig, j: int) -> tuple[np.ndarray, np.ndarray]:
  """The synthetic routing of rotation j for components: indices [T,K] int32, weights f32."""
  return hashgen.topk_routing(cfg.num_tokens, cfg.num_experts, cfg.top_k, cfg.seed + j)


def notebook_weights(cfg: BenchConfig) -> dict[str, np.ndarray]:
  """The reference notebook's weights (seed 999 router, seed 777 experts, zero biases)."""
  # pylint: disable=import-outside-toplevel
  from moe_torch_ref import weights as W
  wcfg = W.WeightConfig(num_experts=cfg.num_experts, top_k=cfg.top_k,
                        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                        dtype="float32")
  return {k: v.numpy() for k, v in W.generate(wcfg, "seed-notebook").items()}


def notebook_x(cfg: BenchConfig, j: int) -> np.ndarray:
  """The notebook's input, 0.1 * randn(T, H) from torch seed (seed + j), float32."""
  import torch  # pylint: disable=import-outside-toplevel
  gen = torch.Generator().manual_seed(cfg.seed + j)
  return (torch.randn(cfg.num_tokens, cfg.hidden_size, generator=gen) * 0.1).numpy()


def rotations(requested: int, bytes_per_set: int) -> int:
  """How many input sets to rotate: `requested`, capped by ROTATION_BYTES, at least 2."""
  cap = ROTATION_BYTES // max(1, bytes_per_set)
  return max(2, min(requested, cap))


def parity_rows(n: int) -> np.ndarray:
  """Evenly spaced row indices (at most PARITY_ROWS) that parity compares."""
  if n <= PARITY_ROWS:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, PARITY_ROWS).round().astype(np.int64))
