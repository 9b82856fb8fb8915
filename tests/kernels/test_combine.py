"""combine_rows: the Pallas kernel against float64 NumPy, within TOLERANCES."""
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_jax.kernels import BlockConfig, combine_rows

from ._support import TOLERANCES, Twin, bits, normal, np_combine, random_index

# (N, T, H, K): T=1, T=100 and H=1152 / 2880 off every block size, exact multiples;
# K = 1..4 (K=3 is not a power of two).
CASES = [(12, 1, 1152, 1), (40, 100, 2880, 4), (40, 100, 2880, 2), (16, 64, 256, 2),
         (6, 13, 200, 3), (6, 13, 200, 4)]


def _assert_close(got, want, dtype):
  rtol, atol, _ = TOLERANCES[dtype]
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


def _biased_combine(src, index, weight, bias, bias_index, **kwargs):
  return combine_rows(src, index, weight, bias=bias, bias_index=bias_index, **kwargs)


def _matmul_combine(src, index, weight, bias, bias_index, lhs, rhs, **kwargs):
  return combine_rows(src, index, weight, bias=bias, bias_index=bias_index, matmul_lhs=lhs,
                      matmul_rhs=rhs, **kwargs)


class Combine(Twin):

  @pytest.mark.parametrize("n,t,h,k", CASES)
  def test_weighted_bf16(self, n, t, h, k):
    src = normal(0, (n, h), jnp.bfloat16)
    index = random_index(k, (t, k), n)
    weight = normal(2, (t, k), jnp.float32)
    got = self.pallas(combine_rows, src, index, weight)
    assert got.shape == (t, h) and got.dtype == jnp.bfloat16
    _assert_close(got, np_combine(src, index, weight), jnp.bfloat16)

  @pytest.mark.parametrize("k", [1, 3])
  def test_unweighted_f32(self, k):
    n, t, h = 9, 37, 300
    src = normal(3, (n, h), jnp.float32)
    index = random_index(4, (t, k), n)
    got = self.pallas(combine_rows, src, index)
    assert got.dtype == jnp.float32
    _assert_close(got, np_combine(src, index), jnp.float32)

  def test_bf16_in_f32_out(self):
    src = normal(5, (10, 200), jnp.bfloat16)
    index = random_index(6, (21, 2), 10)
    weight = normal(7, (21, 2), jnp.float32)
    got = self.pallas(combine_rows, src, index, weight, out_dtype=jnp.float32)
    assert got.dtype == jnp.float32
    _assert_close(got, np_combine(src, index, weight), jnp.float32)

  def test_empty_slots_contribute_exact_zero(self):
    src = normal(8, (4, 136), jnp.float32).at[0].set(jnp.nan)
    index = jnp.asarray([[-1, -1], [1, -1], [-1, 2], [3, 3]], jnp.int32)
    weight = jnp.asarray([[jnp.inf, jnp.nan], [2.0, jnp.inf], [jnp.nan, 0.5], [1.0, 1.0]])
    got = self.pallas(combine_rows, src, index, weight)
    assert np.all(np.asarray(got[0]) == 0) and np.isfinite(np.asarray(got)).all()
    want = np_combine(src, index, np.where(np.asarray(index) >= 0, weight, 0.0))
    _assert_close(got, want, jnp.float32)

  def test_deterministic(self):
    src = normal(9, (32, 1152), jnp.bfloat16)
    index = random_index(10, (50, 4), 32, p_empty=0.1)
    weight = normal(11, (50, 4), jnp.float32)
    runs = [self.pallas(combine_rows, src, index, weight, out_dtype=jnp.float32) for _ in range(3)]
    for run in runs[1:]:
      np.testing.assert_array_equal(bits(run), bits(runs[0]))

  def test_explicit_config(self):
    src = normal(12, (9, 300), jnp.float32)
    index = random_index(13, (11, 3), 9)
    config = BlockConfig(block_rows=4, block_h=64, num_warps=2)
    got = self.pallas(combine_rows, src, index, config=config)
    _assert_close(got, np_combine(src, index), jnp.float32)

  @pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
  @pytest.mark.parametrize("num_bias_rows", [5, 32])
  def test_bias_rows(self, dtype, num_bias_rows):
    # The experts' down bias per slot: empty slots add no bias, a slot with
    # bias_index < 0 adds none, and B need not be a power of two.
    n, t, h, k = 24, 37, 2880, 4
    src = normal(16, (n, h), dtype)
    index = random_index(17, (t, k), n)
    bias_index = random_index(18, (t, k), num_bias_rows, p_empty=0.1)
    bias = normal(19, (num_bias_rows, h), jnp.float32)
    weight = normal(20, (t, k), jnp.float32)
    got = self.pallas(_biased_combine, src, index, weight, bias, bias_index)
    assert got.dtype == dtype
    want = np_combine(src, index, weight, bias, bias_index)
    assert np.abs(want - np_combine(src, index, weight)).max() > 0.5  # the bias counts
    _assert_close(got, want, dtype)

  @pytest.mark.parametrize("t,h,e,rhs_dtype,out_dtype", [
      (37, 2880, 32, jnp.bfloat16, jnp.bfloat16),  # gpt-oss-20b's E and H, T off the block
      (13, 200, 6, jnp.bfloat16, jnp.float32),  # E padded to 16, H off the column block
      (5, 8, 3, jnp.bfloat16, jnp.float32),  # T and H below the dot's 16: the tile grows
      (64, 256, 128, jnp.bfloat16, jnp.float32),  # E = 128 (routing-bench): two chunks
      (16, 64, 200, jnp.bfloat16, jnp.float32),  # E padded to 256: four chunks of 64
  ])
  def test_matmul_term(self, t, h, e, rhs_dtype, out_dtype):
    # The router's input gradient dlogits @ W joins the pack's in one rounding, beside
    # weights and biases.
    n, k = 24, 3
    src = normal(30, (n, h), rhs_dtype)
    index = random_index(31, (t, k), n, p_empty=0.1)
    weight = normal(32, (t, k), jnp.float32)
    bias_index = random_index(33, (t, k), 4)
    bias = normal(34, (4, h), jnp.float32)
    lhs = 3 * normal(35, (t, e), jnp.float32)
    rhs = normal(36, (e, h), rhs_dtype)
    got = self.pallas(_matmul_combine, src, index, weight, bias, bias_index, lhs, rhs,
                      out_dtype=out_dtype)
    assert got.dtype == out_dtype
    term = np.asarray(lhs, np.float64) @ np.asarray(rhs, np.float64)
    want = np_combine(src, index, weight, bias, bias_index) + term
    # lhs enters as two 16-bit terms: 2^-17 of |lhs| |rhs| per product, f32 sums.
    scale = np.abs(np.asarray(lhs, np.float64)) @ np.abs(np.asarray(rhs, np.float64))
    rtol, atol, _ = TOLERANCES[out_dtype]
    np.testing.assert_allclose(np.asarray(got, np.float64), want,
                               rtol=rtol, atol=atol + 2.0 ** -16 * scale.max())
    assert np.abs(term).max() > 1.0  # the term counts

  def test_matmul_term_needs_a_dot_sized_tile(self):
    src, index = normal(37, (4, 64), jnp.bfloat16), random_index(38, (8, 2), 4)
    lhs, rhs = normal(39, (8, 4), jnp.float32), normal(40, (4, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="block_rows and block_h >= 16"):
      self.pallas(_matmul_combine, src, index, None, None, None, lhs, rhs,
                  config=BlockConfig(block_rows=8, block_h=64))

  @settings(max_examples=15, deadline=None)
  @given(st.lists(st.integers(-1, 3), min_size=14, max_size=14))
  def test_hypothesis_index(self, index):
    src = normal(14, (4, 72), jnp.float32)
    index = jnp.asarray(index, jnp.int32).reshape(7, 2)
    weight = normal(15, (7, 2), jnp.float32)
    got = self.pallas(combine_rows, src, index, weight)
    _assert_close(got, np_combine(src, index, weight), jnp.float32)


@pytest.mark.gpu
class TestCombineGpu(Combine):
  INTERPRET = False


class TestCombineInterpret(Combine):
  INTERPRET = True
