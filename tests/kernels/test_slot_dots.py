"""slot_dots: the Pallas kernel against float64 NumPy, relative to sum |x * g|."""
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_jax.kernels import BlockConfig, slot_dots

from ._support import SLOT_DOT_RTOL, Twin, bits, normal, np_slot_dots, random_index

# (N, T, H, K): T=1, T=100, H=1152 / 2880 off every block size, exact multiples, K=1..4.
CASES = [(12, 1, 1152, 2), (40, 100, 2880, 4), (16, 64, 256, 1), (6, 13, 200, 3)]


def _assert_close(got, src, index, g):
  want, magnitude = np_slot_dots(src, index, g)
  got = np.asarray(got, np.float64)
  assert got.shape == want.shape
  np.testing.assert_array_less(np.abs(got - want), SLOT_DOT_RTOL * magnitude + 1e-30)


class SlotDots(Twin):

  @pytest.mark.parametrize("n,t,h,k", CASES)
  @pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
  def test_close_to_float64(self, n, t, h, k, dtype):
    src = normal(0, (n, h), dtype)
    index = random_index(1, (t, k), n)
    g = normal(2, (t, h), dtype)
    got = self.pallas(slot_dots, src, index, g)
    assert got.dtype == jnp.float32
    _assert_close(got, src, index, g)

  def test_empty_slots_are_exact_zero(self):
    src = normal(3, (4, 136), jnp.float32).at[0].set(jnp.nan)
    index = jnp.asarray([[-1, -1], [1, -1], [2, 3]], jnp.int32)
    g = normal(4, (3, 136), jnp.float32).at[0, 5].set(jnp.inf)  # 0 * inf must not leak
    got = np.asarray(self.pallas(slot_dots, src, index, g))
    assert np.all(got[np.asarray(index) < 0] == 0)
    _assert_close(got, src, index, g)

  def test_deterministic(self):
    src = normal(5, (32, 2880), jnp.bfloat16)
    index = random_index(6, (50, 4), 32, p_empty=0.1)
    g = normal(7, (50, 2880), jnp.bfloat16)
    runs = [self.pallas(slot_dots, src, index, g) for _ in range(3)]
    for run in runs[1:]:
      np.testing.assert_array_equal(bits(run), bits(runs[0]))

  def test_explicit_config(self):
    src = normal(8, (9, 300), jnp.float32)
    index = random_index(9, (11, 3), 9)
    g = normal(10, (11, 300), jnp.float32)
    config = BlockConfig(block_rows=2, block_h=32, num_warps=1)
    _assert_close(self.pallas(slot_dots, src, index, g, config=config), src, index, g)

  @settings(max_examples=15, deadline=None)
  @given(st.lists(st.integers(-1, 3), min_size=21, max_size=21))
  def test_hypothesis_index(self, index):
    src = normal(11, (4, 72), jnp.float32)
    index = jnp.asarray(index, jnp.int32).reshape(7, 3)
    g = normal(12, (7, 72), jnp.float32)
    _assert_close(self.pallas(slot_dots, src, index, g), src, index, g)


@pytest.mark.gpu
class TestSlotDotsGpu(SlotDots):
  INTERPRET = False


class TestSlotDotsInterpret(SlotDots):
  INTERPRET = True
