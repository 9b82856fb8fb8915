"""make_dispatch(): sort, counts, positions, capacity and the drop mask, against NumPy."""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import capacity_for, make_dispatch
from tests.core.reference import keep_mask_np


def _check(idx, num_experts, capacity):
  meta = make_dispatch(jnp.asarray(idx, jnp.int32), num_experts, capacity)
  t, k = idx.shape
  flat = idx.reshape(-1)
  order = np.argsort(flat, kind="stable")
  np.testing.assert_array_equal(meta.sort_order, order)
  counts = np.bincount(flat, minlength=num_experts)
  np.testing.assert_array_equal(meta.tokens_per_expert, counts)
  np.testing.assert_array_equal(meta.bins, np.cumsum(counts))
  keep = keep_mask_np(idx, num_experts, capacity)
  np.testing.assert_array_equal(np.asarray(meta.keep).reshape(t, k), keep)
  # The buffer row of each kept slot holds that slot; dropped slots have row -1.
  ci = np.asarray(meta.combine_index)
  gs = np.asarray(meta.gather_slot)
  for s in range(t * k):
    row = ci[s // k, s % k]
    assert (row >= 0) == keep[s // k, s % k]
    if row >= 0:
      assert gs[row] == s
  assert (gs >= 0).sum() == keep.sum()
  return meta


@pytest.mark.parametrize("capacity", [None, 1, 2, 5])
def test_random_routing(capacity):
  rng = np.random.default_rng(1)
  idx = np.stack([rng.choice(6, 3, replace=False) for _ in range(11)])
  _check(idx, 6, capacity)


@pytest.mark.parametrize("num_experts", [1, 2, 3, 4, 5, 6])
def test_every_empty_expert_pattern(num_experts):
  # Every non-empty set of used experts, K=1, tokens cycling over the used set.
  for used in itertools.chain.from_iterable(
      itertools.combinations(range(num_experts), r) for r in range(1, num_experts + 1)):
    idx = np.array([[used[t % len(used)]] for t in range(7)])
    _check(idx, num_experts, None)
    _check(idx, num_experts, 2)


def test_all_tokens_on_one_expert_overflow():
  idx = np.tile([[3, 0]], (9, 1))  # every token picks experts 3 and 0
  meta = _check(idx, 4, 4)
  assert float(meta.drop_fraction) == pytest.approx(10 / 18)
  # The earliest four tokens win on both experts.
  np.testing.assert_array_equal(np.asarray(meta.keep).reshape(9, 2)[:, 0], [1] * 4 + [0] * 5)


def test_capacity_formula():
  assert capacity_for(1.0, 100, 4, 128) == 4  # ceil(3.125)
  assert capacity_for(1.25, 4096, 4, 32) == 640
  assert capacity_for(0.01, 1, 1, 64) == 1
  assert capacity_for(1.1, 10, 1, 1) == 11  # exact decimal, not float rounding (12)
  with pytest.raises(ValueError, match="capacity_factor must be > 0, got 0"):
    capacity_for(0, 10, 2, 4)


def test_bad_index_dtype():
  with pytest.raises(ValueError, match="expert_indices must be int32, got int64|float32"):
    make_dispatch(jnp.zeros((3, 2), jnp.float32), 4, None)
