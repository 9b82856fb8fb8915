"""gather_rows: the Pallas kernel is bitwise equal to the xla reference."""
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_jax.kernels import BlockConfig, gather_rows

from ._support import Twin, bits, normal, np_gather, random_index

# (N, H, R): R and H off every block size, R=1, H=1152 and H=2880 (GPT-OSS), which
# no 256-wide tile divides, exact multiples, and a tiny H below one tile.
SHAPES = [(7, 200, 13), (64, 1152, 1), (5, 2880, 37), (16, 128, 64), (3, 8, 5)]


class Gather(Twin):

  @pytest.mark.parametrize("n,h,r", SHAPES)
  def test_bitwise_equal_to_xla(self, n, h, r):
    src = normal(0, (n, h), jnp.bfloat16)
    index = random_index(1, (r,), n)
    got = self.pallas(gather_rows, src, index)
    want = gather_rows(src, index, implementation="xla")
    assert got.shape == (r, h) and got.dtype == src.dtype
    np.testing.assert_array_equal(bits(got), bits(want))
    np.testing.assert_array_equal(np.asarray(got, np.float64), np_gather(src, index))

  @pytest.mark.parametrize(
      "pattern",
      [
          pytest.param(lambda r, n: np.full(r, -1), id="all_empty"),
          pytest.param(lambda r, n: np.full(r, n - 1), id="all_one_row"),
          pytest.param(lambda r, n: np.arange(r) % n, id="cyclic_duplicates"),
          pytest.param(lambda r, n: np.arange(r)[::-1] % n, id="reversed"),
          pytest.param(lambda r, n: np.arange(r) - r // 2, id="negatives_then_rows"),
      ],
  )
  def test_index_patterns(self, pattern):
    n, h, r = 7, 200, 13
    src = normal(2, (n, h), jnp.float32)
    index = jnp.asarray(pattern(r, n), jnp.int32)
    got = self.pallas(gather_rows, src, index)
    np.testing.assert_array_equal(bits(got), bits(gather_rows(src, index, implementation="xla")))

  def test_moves_nan_and_inf_bits(self):
    src = normal(3, (4, 200), jnp.bfloat16).at[1, 3].set(jnp.nan).at[2, 199].set(-jnp.inf)
    index = jnp.asarray([1, -1, 2, 1, 0], jnp.int32)
    got = self.pallas(gather_rows, src, index)
    np.testing.assert_array_equal(bits(got), bits(gather_rows(src, index, implementation="xla")))

  def test_index_past_the_end_reads_last_row(self):
    src = normal(4, (5, 200), jnp.float32)
    index = jnp.asarray([0, 5, 1 << 30, -7], jnp.int32)
    got = self.pallas(gather_rows, src, index)
    np.testing.assert_array_equal(bits(got), bits(gather_rows(src, index, implementation="xla")))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(src[4]))

  @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
  def test_scale_close_to_float64(self, dtype):
    n, h, r = 6, 1152, 21
    src = normal(5, (n, h), dtype)
    index = random_index(6, (r,), n)
    scale = normal(7, (r,), jnp.float32).at[0].set(jnp.inf)  # inf never reaches an empty slot
    index = index.at[0].set(-1)
    got = self.pallas(gather_rows, src, index, scale)
    assert got.dtype == dtype
    rtol = 1e-6 if dtype == jnp.float32 else 2**-8
    np.testing.assert_allclose(np.asarray(got, np.float64), np_gather(src, index, scale), rtol=rtol)
    want = gather_rows(src, index, scale, implementation="xla")
    np.testing.assert_array_equal(bits(got), bits(want))  # same f32 product, same rounding

  @pytest.mark.parametrize("config", [BlockConfig(block_rows=1, block_h=128),
                                      BlockConfig(block_rows=8, block_h=64, num_warps=2)])
  def test_explicit_configs(self, config):
    src = normal(8, (9, 300), jnp.bfloat16)
    index = random_index(9, (11,), 9)
    got = self.pallas(gather_rows, src, index, config=config)
    np.testing.assert_array_equal(bits(got), bits(gather_rows(src, index, implementation="xla")))

  @settings(max_examples=15, deadline=None)
  @given(st.lists(st.integers(-1, 4), min_size=19, max_size=19))
  def test_hypothesis_index(self, index):
    src = normal(10, (5, 136), jnp.bfloat16)
    index = jnp.asarray(index, jnp.int32)
    got = self.pallas(gather_rows, src, index)
    np.testing.assert_array_equal(bits(got), bits(np_gather(src, index).astype(jnp.bfloat16)))


@pytest.mark.gpu
class TestGatherGpu(Gather):
  INTERPRET = False


class TestGatherInterpret(Gather):
  INTERPRET = True
