"""Small shared fixtures for the torch_ref tests: sizes, weights and inputs."""
from __future__ import annotations

import functools

import numpy as np
import torch

from moe_torch_ref import weights

# Small sizes: E=8 experts, K=2, H=64, I=32, T=37 tokens (not a multiple of anything).
E, K, H, I, T = 8, 2, 64, 32, 37
# capacity_factor = E/K gives C = T: nothing can drop.
NO_DROP = E / K


@functools.lru_cache(maxsize=None)
def _cached(e, k, h, i, dtype, scheme):
  cfg = weights.WeightConfig(num_experts=e, top_k=k, hidden_size=h, intermediate_size=i,
                             dtype=dtype)
  return weights.generate(cfg, scheme)


def state_dict(*, e=E, k=K, h=H, i=I, dtype="float32", scheme="nonzero-bias"):
  """A fresh dict (shared tensors are never modified by the code under test)."""
  return dict(_cached(e, k, h, i, dtype, scheme))


def inputs(t=T, h=H, *, seed=0, dtype=torch.float32, scale=1.0):
  gen = torch.Generator().manual_seed(seed)
  return (torch.randn(t, h, generator=gen) * scale).to(dtype)


def to_numpy(sd):
  return {name: value.double().numpy() for name, value in sd.items()}


def assert_close(actual, expected, *, rtol, atol, what=""):
  actual = np.asarray(actual.detach().double() if isinstance(actual, torch.Tensor) else actual)
  expected = np.asarray(expected.detach().double() if isinstance(expected, torch.Tensor) else expected)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
