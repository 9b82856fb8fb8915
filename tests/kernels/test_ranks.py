"""expert_ranks: the dispatch's counting sort against a plain NumPy count.

The oracle walks the slots in order and counts, per expert, the slots seen so far:
no sort is involved, so it does not share the "xla" implementation's argsort.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat
from moe_jax.kernels import BlockConfig, expert_ranks
from moe_jax.kernels import ranks

from ._support import Twin, lowers_triton


def _np_ranks(ids, num_experts):
  seen = np.zeros(num_experts, np.int64)
  position = np.empty(ids.size, np.int64)
  for s, e in enumerate(ids):
    position[s], seen[e] = seen[e], seen[e] + 1
  return position, seen


# (M, E, how the slots choose): M off the program block (tails), one expert, E off a
# power of two, E = 128 (16 more programs of 128 slots), an expert every slot picks,
# experts no slot picks, and gpt-oss-20b's M = T * K = 16384 over E = 32.
CASES = [
    (5, 3, "uniform"),
    (1000, 7, "uniform"),
    (33, 1, "uniform"),
    (4096 + 17, 128, "uniform"),
    (2500, 16, "one"),
    (1500, 40, "few"),
    (16384, 32, "uniform"),
]


def _ids(m, e, how, seed=0):
  rng = np.random.default_rng(seed)
  if how == "one":
    return np.full(m, e - 1, np.int32)
  if how == "few":  # three experts, the rest empty
    return rng.choice([0, 9, e - 1], m).astype(np.int32)
  return rng.integers(0, e, m).astype(np.int32)


# Blocks other than the default: more programs than blocks of the default, and a
# one-hot wider than E.
CONFIGS = [None, BlockConfig(block_rows=64, block_h=128, num_warps=4, num_stages=2)]


class Ranks(Twin):

  @pytest.mark.parametrize("config", CONFIGS)
  @pytest.mark.parametrize("m,e,how", CASES)
  def test_matches_numpy(self, m, e, how, config):
    ids = _ids(m, e, how)
    position, counts = self.pallas(expert_ranks, jnp.asarray(ids), num_experts=e,
                                   config=config)
    want_position, want_counts = _np_ranks(ids, e)
    assert position.dtype == counts.dtype == jnp.int32
    np.testing.assert_array_equal(position, want_position)
    np.testing.assert_array_equal(counts, want_counts)

  def test_many_histogram_chunks(self):
    """258 blocks of 16 slots: the rank kernel's later programs sum the histogram in
    up to five [64, EP] chunks, the last one partly past the blocks."""
    ids = _ids(4113, 100, "uniform", seed=3)
    config = BlockConfig(block_rows=16, block_h=128, num_warps=4, num_stages=1)
    position, counts = self.pallas(expert_ranks, jnp.asarray(ids), num_experts=100,
                                   config=config)
    want_position, want_counts = _np_ranks(ids, 100)
    np.testing.assert_array_equal(position, want_position)
    np.testing.assert_array_equal(counts, want_counts)

  @pytest.mark.parametrize("m,e,how", [CASES[0], CASES[3], CASES[5]])
  def test_scanned_histogram(self, m, e, how):
    """Past `ranks.SCAN_ABOVE` the rank kernel reads an XLA prefix over the blocks
    instead of summing the histogram: forced here with scan_above=0."""
    ids = _ids(m, e, how, seed=4)
    position, counts = ranks.expert_ranks(
        jnp.asarray(ids), num_experts=e, config=ranks.default_ranks_config(e),
        interpret=self.INTERPRET, scan_above=0)
    want_position, want_counts = _np_ranks(ids, e)
    np.testing.assert_array_equal(position, want_position)
    np.testing.assert_array_equal(counts, want_counts)

  def test_vmap(self):
    """vmap adds a grid axis in front: the kernel's program ids must follow it."""
    ids = np.stack([_ids(1500, 7, "uniform", seed) for seed in range(3)])
    position, counts = jax.vmap(lambda i: self.pallas(expert_ranks, i, num_experts=7))(
        jnp.asarray(ids))
    for b in range(3):
      want_position, want_counts = _np_ranks(ids[b], 7)
      np.testing.assert_array_equal(position[b], want_position)
      np.testing.assert_array_equal(counts[b], want_counts)


@pytest.mark.gpu
class TestRanksGpu(Ranks):
  INTERPRET = False


class TestRanksInterpret(Ranks):
  INTERPRET = True


@pytest.mark.parametrize("m,e,how", CASES)
def test_xla_matches_numpy(m, e, how):
  ids = _ids(m, e, how, seed=1)
  position, counts = expert_ranks(jnp.asarray(ids), e, implementation="xla")
  want_position, want_counts = _np_ranks(ids, e)
  np.testing.assert_array_equal(position, want_position)
  np.testing.assert_array_equal(counts, want_counts)


def test_block_holds_about_8k_onehot_entries():
  configs = [ranks.default_ranks_config(e) for e in (1, 16, 32, 128, 4096)]
  assert [(c.block_rows, c.block_h) for c in configs] == [
      (512, 16), (512, 16), (256, 32), (64, 128), (16, 4096)]


@pytest.mark.parametrize("m,e,want", [
    (16384, 32, False),   # gpt-oss-20b: 64 blocks at EP = 32
    (65536, 64, False),   # sonic-medium: 512 blocks at EP = 64, 2^24 entries
    (32768, 128, True),   # routing-bench: 512 blocks at EP = 128, 2^25
    (131072, 256, True),  # sonic-large: 4096 blocks at EP = 256
])
def test_ranks_scan_where_measured_faster(m, e, want):
  """The ranks' threshold sends each measured shape to its faster path (NOTES variant
  41); the layout's, which sums every row in every program, scans sonic-large only."""
  config = ranks.default_ranks_config(e)
  assert ranks.scans(m, config, ranks.RANKS_SCAN_ABOVE) == want
  assert ranks.scans(m, config, ranks.SCAN_ABOVE) == (e == 256)


@lowers_triton
@pytest.mark.parametrize("scan_above", [ranks.RANKS_SCAN_ABOVE, 0])
def test_lowers_through_triton(scan_above):
  """Both ways of reading the slots before a block (summed in-kernel, or an XLA scan)."""
  config = ranks.default_ranks_config(32)
  text = _compat.lower_for_cuda(
      lambda i: ranks.expert_ranks(i, num_experts=32, config=config, interpret=False,
                                   scan_above=scan_above),
      jnp.zeros((16384,), jnp.int32))
  assert ranks.KERNEL_NAME in text and ranks.HISTOGRAM_NAME in text


@pytest.mark.parametrize("ids, e, message", [
    (jnp.zeros((4,), jnp.float32), 3, r"expert_ids must be a non-empty int32 \[M\] array"),
    (jnp.zeros((2, 4), jnp.int32), 3, r"got shape \(2, 4\)"),
    (jnp.zeros((0,), jnp.int32), 3, "non-empty"),
    (jnp.zeros((4,), jnp.int32), 0, "num_experts must be an int >= 1, got 0"),
    (jnp.zeros((4,), jnp.int32), 2.0, "num_experts must be an int >= 1, got 2.0"),
])
def test_errors_name_the_argument(ids, e, message):
  for impl in ("xla", "pallas"):
    with pytest.raises(ValueError, match=message):
      expert_ranks(ids, e, implementation=impl)


def test_config_must_hold_every_expert():
  with pytest.raises(ValueError, match="config.block_h must be >= num_experts=20"):
    expert_ranks(jnp.zeros((8,), jnp.int32), 20, implementation="pallas",
                 config=BlockConfig(block_rows=16, block_h=16))
