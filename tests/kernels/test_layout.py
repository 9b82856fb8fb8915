"""grouped_layout: the dispatch's counting sort and tile layout, against a NumPy walk.

The oracle walks the slots in order (ranks by counting, no sort), then lays the experts'
kept slots out tile by tile with Python loops: it shares no code or formula with the
"xla" implementation's argsort, cumsums and scatters.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat
from moe_jax.kernels import BlockConfig, grouped_layout, layout, ranks
from moe_jax.kernels.layout import max_tiles

from ._support import Twin, lowers_triton


def _np_layout(ids, num_experts, capacity, tile_rows, num_tiles):
  m = ids.size
  position = np.empty(m, np.int64)
  counts = np.zeros(num_experts, np.int64)
  for s, e in enumerate(ids):
    position[s], counts[e] = counts[e], counts[e] + 1
  by_expert = [[s for s in range(m) if ids[s] == e] for e in range(num_experts)]
  sort_order = np.array([s for slots in by_expert for s in slots])
  sorted_experts = ids[sort_order]
  gather_slot = np.full(num_tiles * tile_rows, -1)
  combine_index = np.full(m, -1)
  tile_expert = np.full(num_tiles, -1)
  tile_fill = np.zeros(num_tiles, np.int64)
  tile = 0
  for e, slots in enumerate(by_expert):
    kept = slots if capacity is None else slots[:capacity]
    for i, s in enumerate(kept):
      if i % tile_rows == 0:
        tile_expert[tile], tile = e, tile + 1
      row = (tile - 1) * tile_rows + i % tile_rows
      gather_slot[row], combine_index[s] = s, row
      tile_fill[tile - 1] += 1
  sorted_row = combine_index[sort_order]
  return dict(position=position, counts=counts, sort_order=sort_order,
              sorted_experts=sorted_experts, sorted_row=sorted_row, gather_slot=gather_slot,
              combine_index=combine_index, tile_expert=tile_expert, tile_fill=tile_fill)


def _ids(m, e, how, seed=0):
  rng = np.random.default_rng(seed)
  if how == "one":
    return np.full(m, e - 1, np.int32)
  if how == "skew":  # geometric: expert 0 busiest, the last experts mostly empty
    return np.minimum(rng.geometric(0.3, m) - 1, e - 1).astype(np.int32)
  return rng.integers(0, e, m).astype(np.int32)


# (M, E, capacity, TM, how): one block with a tail (M = 5, 66), one expert, E off a power
# of two, capacities that drop many slots and none, TM 16 / 32 / 128, a skewed routing
# with empty experts, and gpt-oss-20b's slots at cf 1.25 and dropless.
CASES = [
    (5, 3, None, 16, "uniform"),
    (66, 6, 2, 16, "skew"),
    (66, 6, 9, 16, "uniform"),
    (33, 1, None, 16, "uniform"),
    (1000, 7, 100, 32, "skew"),
    (1000, 7, None, 16, "one"),
    (4113, 100, None, 16, "uniform"),
    (16384, 32, 640, 128, "uniform"),
    (16384, 32, None, 128, "skew"),
]


class Layout(Twin):

  @pytest.mark.parametrize("m,e,capacity,tm,how", CASES)
  def test_matches_numpy(self, m, e, capacity, tm, how):
    ids = _ids(m, e, how)
    num_tiles = max_tiles(m, e, capacity, tm)
    got = self.pallas(grouped_layout, jnp.asarray(ids), num_experts=e, capacity=capacity,
                      tile_rows=tm, num_tiles=num_tiles)
    want = _np_layout(ids, e, capacity, tm, num_tiles)
    for name, value in want.items():
      assert getattr(got, name).dtype == jnp.int32, name
      np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)

  def test_more_tiles_than_needed_and_small_blocks(self):
    """A static tile count above the bound (more unused tiles to mark) and blocks of 16
    slots (65 programs, several histogram chunks)."""
    ids = _ids(1031, 40, "skew", seed=2)
    num_tiles = max_tiles(1031, 40, 50, 16) + 7
    config = BlockConfig(block_rows=16, block_h=64, num_warps=4, num_stages=1)
    got = self.pallas(grouped_layout, jnp.asarray(ids), num_experts=40, capacity=50,
                      tile_rows=16, num_tiles=num_tiles, config=config)
    want = _np_layout(ids, 40, 50, 16, num_tiles)
    for name, value in want.items():
      np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)

  @pytest.mark.parametrize("m,e,capacity,tm,how", [CASES[0], CASES[4], CASES[6]])
  def test_scanned_histogram(self, m, e, capacity, tm, how):
    """Past `ranks.SCAN_ABOVE` the layout kernel reads an XLA prefix over the blocks
    and the totals instead of summing the histogram: forced here with scan_above=0."""
    ids = _ids(m, e, how, seed=5)
    num_tiles = max_tiles(m, e, capacity, tm)
    got = layout.grouped_layout(
        jnp.asarray(ids), num_experts=e, capacity=capacity, tile_rows=tm,
        num_tiles=num_tiles, config=ranks.default_ranks_config(e),
        interpret=self.INTERPRET, scan_above=0)
    for name, value in _np_layout(ids, e, capacity, tm, num_tiles).items():
      np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)

  def test_vmap(self):
    """vmap adds a grid axis in front: the program ids must follow it."""
    ids = np.stack([_ids(300, 7, how, seed) for seed, how in enumerate(("uniform", "skew"))])
    num_tiles = max_tiles(300, 7, 30, 16)
    got = jax.vmap(lambda i: self.pallas(grouped_layout, i, num_experts=7, capacity=30,
                                         tile_rows=16, num_tiles=num_tiles))(jnp.asarray(ids))
    for b in range(2):
      for name, value in _np_layout(ids[b], 7, 30, 16, num_tiles).items():
        np.testing.assert_array_equal(getattr(got, name)[b], value, err_msg=name)


@pytest.mark.gpu
class TestLayoutGpu(Layout):
  INTERPRET = False


class TestLayoutInterpret(Layout):
  INTERPRET = True


@lowers_triton
@pytest.mark.parametrize("scan_above", [ranks.SCAN_ABOVE, 0])
def test_lowers_through_triton(scan_above):
  """Both ways of reading the slots before a block (summed in-kernel, or an XLA scan)."""
  config = ranks.default_ranks_config(32)
  text = _compat.lower_for_cuda(
      lambda i: layout.grouped_layout(i, num_experts=32, capacity=640, tile_rows=128,
                                      num_tiles=159, config=config, interpret=False,
                                      scan_above=scan_above),
      jnp.zeros((16384,), jnp.int32))
  assert layout.KERNEL_NAME in text and ranks.HISTOGRAM_NAME in text


@pytest.mark.parametrize("m,e,capacity,tm,how", CASES[:6])
def test_xla_matches_numpy(m, e, capacity, tm, how):
  ids = _ids(m, e, how, seed=1)
  num_tiles = max_tiles(m, e, capacity, tm)
  got = grouped_layout(jnp.asarray(ids), e, capacity=capacity, tile_rows=tm,
                       num_tiles=num_tiles, implementation="xla")
  for name, value in _np_layout(ids, e, capacity, tm, num_tiles).items():
    np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)


@pytest.mark.parametrize("m,e,capacity,tm", [(1000, 7, None, 16), (66, 6, 2, 16),
                                             (16384, 32, 640, 128), (5, 3, None, 16)])
def test_max_tiles_holds_the_worst_routing(m, e, capacity, tm):
  """Every expert but one gets a lone slot (a nearly empty tile each) and the last one
  the rest: the bound is met exactly or from above, never short."""
  kept = [1] * (e - 1) + [m - (e - 1)]
  if capacity is not None:
    kept = [min(k, capacity) for k in kept]
  assert max_tiles(m, e, capacity, tm) >= sum(-(-k // tm) for k in kept)


@pytest.mark.parametrize("kwargs, message", [
    (dict(capacity=None, tile_rows=16, num_tiles=4), r"num_tiles must be >= 5 .* got 4"),
    (dict(capacity=0, tile_rows=16, num_tiles=9), "capacity must be None or an int >= 1, got 0"),
    (dict(capacity=None, tile_rows=0, num_tiles=9), "tile_rows must be an int >= 1, got 0"),
    (dict(capacity=None, tile_rows=16, num_tiles=2.0), "num_tiles must be an int >= 1, got 2.0"),
])
def test_errors_name_the_argument(kwargs, message):
  for impl in ("xla", "pallas"):
    with pytest.raises(ValueError, match=message):
      grouped_layout(jnp.zeros((40,), jnp.int32), 3, implementation=impl, **kwargs)
