"""make_dispatch(): sort, counts, positions, capacity and the drop mask, against NumPy."""
import itertools
import re

import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import binned_gather, capacity_for, make_dispatch
from moe_jax.dispatch import grouped_fits, grouped_geometry, grouped_to_padded, padded_to_grouped
from tests.core.reference import keep_mask_np


def _check(idx, num_experts, capacity, grouped=None, implementation="xla"):
  meta = make_dispatch(jnp.asarray(idx, jnp.int32), num_experts, capacity, grouped=grouped,
                       implementation=implementation)
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
  assert meta.grouped == (capacity is None if grouped is None else grouped)
  if meta.grouped:
    _check_fill(meta)
  else:
    assert meta.tile_fill is None and meta.tile_expert is None
  return meta


def _check_fill(meta):
  """Each tile's fill counts its rows holding a slot, and those rows come first."""
  used = (np.asarray(meta.gather_slot) >= 0).reshape(-1, meta.tile_rows)
  fill = np.asarray(meta.tile_fill)
  np.testing.assert_array_equal(used, np.arange(meta.tile_rows)[None, :] < fill[:, None])


@pytest.mark.parametrize("implementation", ["xla", "pallas"])  # the counting sort's
@pytest.mark.parametrize("grouped", [None, True])
@pytest.mark.parametrize("capacity", [None, 1, 2, 5])
def test_random_routing(capacity, grouped, implementation):
  rng = np.random.default_rng(1)
  idx = np.stack([rng.choice(6, 3, replace=False) for _ in range(11)])
  _check(idx, 6, capacity, grouped, implementation)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("num_experts", [1, 2, 3, 4, 5, 6])
def test_every_empty_expert_pattern(num_experts, implementation):
  # Every non-empty set of used experts, K=1, tokens cycling over the used set.
  for used in itertools.chain.from_iterable(
      itertools.combinations(range(num_experts), r) for r in range(1, num_experts + 1)):
    idx = np.array([[used[t % len(used)]] for t in range(7)])
    _check(idx, num_experts, None, implementation=implementation)
    _check(idx, num_experts, 2, implementation=implementation)
    _check(idx, num_experts, 2, grouped=True, implementation=implementation)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
def test_all_tokens_on_one_expert_overflow(implementation):
  idx = np.tile([[3, 0]], (9, 1))  # every token picks experts 3 and 0
  meta = _check(idx, 4, 4, implementation=implementation)
  assert float(meta.drop_fraction) == pytest.approx(10 / 18)
  # The earliest four tokens win on both experts.
  np.testing.assert_array_equal(np.asarray(meta.keep).reshape(9, 2)[:, 0], [1] * 4 + [0] * 5)


def test_capacity_formula():
  assert capacity_for(1.0, 100, 4, 128) == 4  # ceil(3.125)
  assert capacity_for(1.25, 4096, 4, 32) == 640
  assert capacity_for(0.01, 1, 1, 64) == 1
  assert capacity_for(1.1, 10, 1, 1) == 11  # exact decimal, not float rounding (12)
  assert capacity_for(np.float32(1.1), 10, 1, 1) == 11  # float32's 1.1, not its float64 widening
  assert capacity_for(np.float64(1.1), 10, 1, 1) == 11
  assert capacity_for(np.float32(1.25), 4096, 4, 32) == 640
  assert capacity_for(jnp.float32(1.1), 10, 1, 1) == 11  # a concrete JAX scalar
  assert capacity_for(1.25, 0, 2, 4) == 1  # no tokens: the one-slot minimum
  with pytest.raises(ValueError, match="capacity_factor must be a finite number > 0, got 0"):
    capacity_for(0, 10, 2, 4)
  for args, message in [((None, 10, 2, 4), "capacity_factor must be a finite number > 0, got None"),
                        ((1.25, -5, 2, 4), "num_tokens must be an int >= 0, got -5"),
                        ((1.25, 10, 0, 4), "top_k must be an int >= 1, got 0"),
                        ((1.25, 10, 2, 0), "num_experts must be an int >= 1, got 0"),
                        ((1.25, 10.0, 2, 4), "num_tokens must be an int >= 0, got 10.0")]:
    with pytest.raises(ValueError, match=re.escape(message)):
      capacity_for(*args)


def test_bad_index_dtype():
  with pytest.raises(ValueError, match="expert_indices must be int32, got int64|float32"):
    make_dispatch(jnp.zeros((3, 2), jnp.float32), 4, None)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("capacity", [None, 4, 9])
@pytest.mark.parametrize("tile_rows", [None, 16, 32])
@pytest.mark.parametrize("pattern", ["random", "one_expert", "one_each", "balanced"])
def test_grouped_tile_layout(pattern, tile_rows, capacity, implementation):
  rng = np.random.default_rng(7)
  e, t, k = 5, 37, 2
  idx = {
      "random": np.stack([rng.choice(e, k, replace=False) for _ in range(t)]),
      "one_expert": np.stack([[3, 1]] * t),  # two experts hold everything
      "one_each": np.stack([[i % e, (i + 1) % e] for i in range(t)])[:3],
      "balanced": np.stack([[(2 * i) % e, (2 * i + 1) % e] for i in range(t)]),
  }[pattern]
  _check(idx, e, capacity, grouped=True, implementation=implementation)
  meta = make_dispatch(jnp.asarray(idx, jnp.int32), e, capacity, tile_rows=tile_rows,
                       grouped=True, implementation=implementation)
  tm = meta.tile_rows
  assert tm == (tile_rows or 16)  # next_pow2(M / E) clamped to >= 16
  # Each expert holds its first min(count, C) slots (the padded layout's keep rule).
  counts = np.bincount(idx.reshape(-1), minlength=e)
  if capacity is not None:
    counts = np.minimum(counts, capacity)
  tiles = -(-counts // tm)
  tile_expert = np.asarray(meta.tile_expert)
  # Tiles in expert order, each expert ceil(count / TM) of them, unused tiles last.
  want = np.concatenate([np.repeat(np.arange(e), tiles),
                         np.full(len(tile_expert) - tiles.sum(), -1)])
  np.testing.assert_array_equal(tile_expert, want)
  # Every kept slot sits in a tile of its own expert, in slot order within the expert.
  ci = np.asarray(meta.combine_index)
  row_expert = np.repeat(tile_expert, tm)
  kept = ci >= 0
  np.testing.assert_array_equal(row_expert[ci[kept]], idx[kept])
  sorted_row = np.asarray(meta.sorted_row)
  on = sorted_row >= 0
  assert np.all(np.diff(sorted_row[on]) > 0)
  np.testing.assert_array_equal(np.asarray(meta.gather_slot)[sorted_row[on]],
                                np.asarray(meta.sort_order)[on])
  _check_fill(meta)
  fill_per_expert = np.bincount(tile_expert[tile_expert >= 0],
                                weights=np.asarray(meta.tile_fill)[tile_expert >= 0], minlength=e)
  np.testing.assert_array_equal(fill_per_expert, counts)  # every slot counted once


def test_dropless_tile_count_bound_is_tight_enough():
  # Worst case: every expert holds one slot past a tile boundary.
  e, tm = 4, 16
  idx = np.repeat(np.arange(e), tm + 1)[:, None]  # 68 slots, 17 per expert
  meta = make_dispatch(jnp.asarray(idx, jnp.int32), e, None, tile_rows=tm)
  assert np.all(np.asarray(meta.tile_expert) >= 0)  # all 8 tiles are used
  assert meta.num_rows == 8 * tm


def test_bad_tile_rows_and_layout():
  with pytest.raises(ValueError, match=r"tile_rows must be None or \(grouped layout only\) a "
                                       r"power of two >= 16, got 24 with grouped=True"):
    make_dispatch(jnp.zeros((3, 2), jnp.int32), 4, None, tile_rows=24)
  with pytest.raises(ValueError, match="got 16 with grouped=False"):
    make_dispatch(jnp.zeros((3, 2), jnp.int32), 4, 4, tile_rows=16)
  with pytest.raises(ValueError, match="grouped must be None, True or .with a capacity. False, "
                                       "got False with capacity=None"):
    make_dispatch(jnp.zeros((3, 2), jnp.int32), 4, None, grouped=False)


def test_grouped_geometry_with_capacity():
  # gpt-oss-20b at cf 1.25: C = 640 = 5 tiles of 128; the slot bound (159) is the tighter.
  assert grouped_geometry(16384, 32, 640) == (128, 159)
  assert grouped_fits(16384, 32, 640)  # 20352 rows <= E*C = 20480
  # cf 1.0: C = 512 = 4 tiles per expert bounds it: exactly E*C rows.
  assert grouped_geometry(16384, 32, 512) == (128, 128) and grouped_fits(16384, 32, 512)
  # The notebook: C = 4 against a 16-row tile would need 4x the rows.
  assert grouped_geometry(400, 128, 4)[0] == 16 and not grouped_fits(400, 128, 4)


def test_grouped_tile_count_bound_with_capacity():
  # Worst case: every expert over capacity, C = 17 one row past a tile boundary.
  e, tm, cap = 4, 16, 17
  idx = np.repeat(np.arange(e), 30)[:, None]
  meta = make_dispatch(jnp.asarray(idx, jnp.int32), e, cap, tile_rows=tm, grouped=True)
  assert meta.num_rows == 8 * tm  # E * ceil(C / TM) tiles
  assert np.all(np.asarray(meta.tile_expert) >= 0)  # all used
  np.testing.assert_array_equal(np.asarray(meta.tile_fill), [16, 1] * e)


@pytest.mark.parametrize("capacity", [3, 8, 40])
def test_grouped_and_padded_views_agree(capacity):
  """grouped_to_padded(gather in the grouped layout) is the padded gather, bit for bit,
  and padded_to_grouped inverts it."""
  rng = np.random.default_rng(3)
  e, t, k, h = 5, 40, 2, 6
  idx = jnp.asarray(np.stack([rng.choice(e, k, replace=False, p=[.4, .3, .15, .1, .05])
                              for _ in range(t)]), jnp.int32)
  x = jnp.asarray(rng.standard_normal((t, h)), jnp.float32)
  padded = binned_gather(x, make_dispatch(idx, e, capacity), implementation="xla")
  meta = make_dispatch(idx, e, capacity, grouped=True)
  rows = binned_gather(x, meta, implementation="xla")
  np.testing.assert_array_equal(grouped_to_padded(rows, meta), padded)
  np.testing.assert_array_equal(padded_to_grouped(padded, meta), rows)
  with pytest.raises(ValueError, match="needs a binned dispatch in the grouped layout"):
    grouped_to_padded(padded.reshape(-1, h), make_dispatch(idx, e, capacity))
