"""binned_gather / binned_scatter: values, gradients and edge cases, xla and pallas.

On CPU the pallas implementation runs its kernels with interpret=True; the GPU
twin (`-m gpu`) runs the same tests compiled.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from moe_jax import binned_gather, binned_scatter, make_dispatch

# (rtol, atol) of the weighted combine against float64, with the reason.
TOLERANCES = {
    jnp.float32: (1e-6, 1e-6, "f32 products and a K-term f32 sum: a few ulps"),
    jnp.bfloat16: (1e-2, 1e-2, "f32 accumulation, one final rounding to bf16 (2^-8 relative)"),
}

IMPLS = [pytest.param("xla", id="xla"), pytest.param("pallas", id="pallas")]
GPU_IMPLS = [pytest.param("pallas", id="pallas-gpu", marks=pytest.mark.gpu)]


def _routing(seed, t, e, k):
  rng = np.random.default_rng(seed)
  idx = np.stack([rng.choice(e, k, replace=False) for _ in range(t)]).astype(np.int32)
  w = rng.random((t, k)).astype(np.float32)
  return idx, w


def _naive_gather(x, meta):
  tok = meta.gather_token
  rows = jnp.where((tok >= 0)[:, None], x[jnp.maximum(tok, 0)], 0)
  if meta.capacity is None:
    return rows  # [M, H]
  return rows.reshape(meta.num_experts, meta.capacity, x.shape[1])  # [E, C, H]


def _naive_scatter(y, meta, w):
  rows = y.reshape(-1, y.shape[-1]).astype(jnp.float32)
  ci = meta.combine_index
  picked = jnp.where((ci >= 0)[..., None], rows[jnp.maximum(ci, 0)], 0)  # [T, K, H]
  return jnp.einsum("tk,tkh->th", w, picked, precision="highest").astype(y.dtype)


def _scatter_np(y, meta, w, bias=None, idx=None):
  rows = np.asarray(jnp.asarray(y, jnp.float32), np.float64).reshape(-1, y.shape[-1])
  ci = np.asarray(meta.combine_index)
  out = np.zeros((ci.shape[0], rows.shape[1]))
  for t, k in itertools.product(*map(range, ci.shape)):
    if ci[t, k] >= 0:
      b = 0.0 if bias is None else np.asarray(bias, np.float64)[idx[t, k]]
      out[t] += float(w[t, k]) * (rows[ci[t, k]] + b)
  return out


class BinnedOpsTest:
  """Shared checks; subclasses pick the implementations."""

  @pytest.mark.parametrize("t,h,e,k,cap", [(100, 1152, 8, 2, 20), (1, 64, 4, 1, 1),
                                           (37, 200, 6, 3, None), (64, 128, 4, 2, 8)])
  def test_gather_bitwise(self, impl, t, h, e, k, cap):
    idx, _ = _routing(t, t, e, k)
    x = jax.random.normal(jax.random.key(0), (t, h), jnp.bfloat16)
    meta = make_dispatch(jnp.asarray(idx), e, cap)
    got = binned_gather(x, meta, implementation=impl)
    want = _naive_gather(x, meta)
    assert got.dtype == x.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got).view(np.uint16), np.asarray(want).view(np.uint16))

  @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
  @pytest.mark.parametrize("cap", [None, 3, 12])
  def test_scatter_float64(self, impl, dtype, cap):
    idx, w = _routing(2, 30, 5, 2)
    meta = make_dispatch(jnp.asarray(idx), 5, cap)
    rows = meta.num_rows
    y = jax.random.normal(jax.random.key(1), (rows, 96), dtype)
    y = y.reshape((5, cap, 96)) if cap else y
    got = binned_scatter(y, meta, jnp.asarray(w), implementation=impl)
    rtol, atol, _ = TOLERANCES[dtype]
    np.testing.assert_allclose(np.asarray(got, np.float64), _scatter_np(y, meta, w), rtol=rtol,
                               atol=atol)

  @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
  @pytest.mark.parametrize("cap", [None, 3, 12])
  def test_scatter_bias_float64(self, impl, dtype, cap):
    idx, w = _routing(5, 30, 5, 2)
    meta = make_dispatch(jnp.asarray(idx), 5, cap)
    y = jax.random.normal(jax.random.key(6), (meta.num_rows, 96), dtype)
    y = y.reshape((5, cap, 96)) if cap else y
    bias = jax.random.normal(jax.random.key(7), (5, 96), jnp.float32)
    got = binned_scatter(y, meta, jnp.asarray(w), bias=bias, expert_indices=jnp.asarray(idx),
                         implementation=impl)
    rtol, atol, _ = TOLERANCES[dtype]
    np.testing.assert_allclose(np.asarray(got, np.float64),
                               _scatter_np(y, meta, w, bias, idx), rtol=rtol, atol=atol)

  @pytest.mark.parametrize("cap", [None, 2])
  def test_scatter_bias_finite_differences(self, impl, cap):
    # d rows, d weights and d bias of the biased combine (dropped slots included).
    idx, w = _routing(8, 7, 3, 2)
    meta = make_dispatch(jnp.asarray(idx), 3, cap)
    shape = (meta.num_rows, 8) if cap is None else (3, cap, 8)
    y = jax.random.normal(jax.random.key(9), shape)
    bias = jax.random.normal(jax.random.key(10), (3, 8))
    f = lambda y, w, b: jnp.sin(binned_scatter(y, meta, w, bias=b, expert_indices=jnp.asarray(idx),
                                               implementation=impl))
    check_grads(f, (y, jnp.asarray(w), bias), order=1, modes=["rev"], eps=1e-2, atol=2e-2,
                rtol=2e-2)
    if cap is not None:  # a dropped slot's expert gets no bias gradient from it
      _, d_w, d_b = jax.grad(lambda *a: f(*a).sum(), argnums=(0, 1, 2))(y, jnp.asarray(w), bias)
      kept = np.asarray(meta.keep).reshape(7, 2)
      g = np.cos(_scatter_np(y, meta, w, bias, idx))
      want = np.zeros((3, 8))
      for t, k in zip(*np.nonzero(kept)):
        want[idx[t, k]] += w[t, k] * g[t]
      np.testing.assert_allclose(d_b, want, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(np.asarray(d_w)[~kept], 0.0)

  @pytest.mark.parametrize("bias_dtype", [jnp.float32, jnp.bfloat16])
  def test_scatter_bias_grads_bf16_float64(self, impl, bias_dtype):
    # bf16 rows and cotangent: the bias gradients run as 16-bit products (an f32
    # operand split in two halves); against float64 sums over the kept slots.
    idx, w = _routing(12, 40, 5, 2)
    meta = make_dispatch(jnp.asarray(idx), 5, 12)
    y = jax.random.normal(jax.random.key(13), (5, 12, 64), jnp.bfloat16)
    bias = jax.random.normal(jax.random.key(14), (5, 64), jnp.float32).astype(bias_dtype)
    cot = jax.random.normal(jax.random.key(15), (40, 64), jnp.bfloat16)
    loss = lambda w, b: jnp.sum(binned_scatter(y, meta, w, bias=b, expert_indices=jnp.asarray(idx),
                                               implementation=impl).astype(jnp.float32) * cot)
    d_w, d_b = jax.grad(loss, argnums=(0, 1))(jnp.asarray(w), bias)
    kept = np.asarray(meta.keep).reshape(40, 2)
    rows = np.asarray(y.astype(jnp.float32), np.float64).reshape(-1, 64)
    b64, g64 = np.asarray(bias.astype(jnp.float32), np.float64), np.asarray(cot, np.float64)
    want_b, want_w = np.zeros((5, 64)), np.zeros((40, 2))
    ci = np.asarray(meta.combine_index)
    for t, k in zip(*np.nonzero(kept)):
      want_b[idx[t, k]] += w[t, k] * g64[t]
      want_w[t, k] = np.dot(rows[ci[t, k]] + b64[idx[t, k]], g64[t])
    scale = np.abs(want_b).max()
    np.testing.assert_allclose(np.asarray(d_b, np.float64), want_b, rtol=0,
                               atol=(1e-4 if bias_dtype == jnp.float32 else 1e-2) * scale)
    np.testing.assert_allclose(np.asarray(d_w, np.float64), want_w, rtol=1e-5, atol=1e-4)

  @pytest.mark.parametrize("cap", [None, 2, 6])
  def test_grads_match_naive(self, impl, cap):
    idx, w = _routing(3, 17, 4, 2)
    meta = make_dispatch(jnp.asarray(idx), 4, cap)
    x = jax.random.normal(jax.random.key(2), (17, 40))
    proj = jax.random.normal(jax.random.key(3), (40, 40))

    def loss(gather, scatter, x, w):
      buf = gather(x, meta)
      y = jnp.tanh(jnp.einsum("...h,hg->...g", buf, proj, precision="highest"))
      return jnp.sum(jnp.sin(scatter(y, meta, w)))

    ours = jax.grad(loss, argnums=(2, 3))(
        lambda a, m: binned_gather(a, m, implementation=impl),
        lambda a, m, b: binned_scatter(a, m, b, implementation=impl), x, jnp.asarray(w))
    ref = jax.grad(loss, argnums=(2, 3))(_naive_gather, _naive_scatter, x, jnp.asarray(w))
    for a, b in zip(ours, ref):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if cap is not None:  # dropped slots get exactly zero weight gradient
      dropped = ~np.asarray(meta.keep).reshape(17, 2)
      assert dropped.any()
      np.testing.assert_array_equal(np.asarray(ours[1])[dropped], 0.0)

  def test_finite_differences(self, impl):
    idx, w = _routing(4, 6, 3, 2)
    meta = make_dispatch(jnp.asarray(idx), 3, 3)
    f = lambda x, w: binned_scatter(binned_gather(x, meta, implementation=impl) ** 2, meta, w,
                                    implementation=impl)
    x = jax.random.normal(jax.random.key(4), (6, 8))
    check_grads(f, (x, jnp.asarray(w)), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)

  @pytest.mark.parametrize("num_experts", [2, 4, 6])
  def test_every_empty_expert_pattern(self, impl, num_experts):
    x = jax.random.normal(jax.random.key(5), (9, 32))
    for r in range(1, num_experts + 1):
      for used in itertools.combinations(range(num_experts), r):
        idx = np.array([[used[t % len(used)]] for t in range(9)], np.int32)
        for cap in (None, 2):
          meta = make_dispatch(jnp.asarray(idx), num_experts, cap)
          buf = binned_gather(x, meta, implementation=impl)
          np.testing.assert_array_equal(buf, _naive_gather(x, meta))
          w = jnp.ones((9, 1))
          np.testing.assert_allclose(binned_scatter(buf, meta, w, implementation=impl),
                                     _scatter_np(buf, meta, np.ones((9, 1))), rtol=1e-6)

  def test_overflow_drops_expected_slots(self, impl):
    idx = np.tile(np.array([[1, 0]], np.int32), (5, 1))
    meta = make_dispatch(jnp.asarray(idx), 3, 2)
    x = jnp.arange(5 * 4, dtype=jnp.float32).reshape(5, 4) + 1
    buf = binned_gather(x, meta, implementation=impl)  # [3, 2, 4]
    np.testing.assert_array_equal(buf[0], x[:2])  # expert 0: tokens 0, 1
    np.testing.assert_array_equal(buf[1], x[:2])
    np.testing.assert_array_equal(buf[2], 0)  # empty expert
    y = binned_scatter(buf, meta, jnp.full((5, 2), 0.5), implementation=impl)
    np.testing.assert_array_equal(y[:2], x[:2])  # both slots kept: 0.5 + 0.5
    np.testing.assert_array_equal(y[2:], 0)  # both slots dropped


@pytest.mark.parametrize("impl", IMPLS)
class TestBinnedOps(BinnedOpsTest):
  pass


@pytest.mark.parametrize("impl", GPU_IMPLS)
class TestBinnedOpsGpu(BinnedOpsTest):
  pass


def test_errors():
  meta = make_dispatch(jnp.zeros((4, 2), jnp.int32).at[:, 1].set(1), 3, 2)
  with pytest.raises(ValueError, match="implementation must be one of .*'xla'.*got 'triton'"):
    binned_gather(jnp.ones((4, 8)), meta, implementation="triton")
  with pytest.raises(ValueError, match=r"x must be \[T=4, H\], got shape \(5, 8\)"):
    binned_gather(jnp.ones((5, 8)), meta)
  with pytest.raises(ValueError, match=r"y must have shape \(3, 2, 8\).*got \(3, 3, 8\)"):
    binned_scatter(jnp.ones((3, 3, 8)), meta, jnp.ones((4, 2)))
  with pytest.raises(ValueError, match=r"weights must be \[T, K\]=\(4, 2\), got \(4, 3\)"):
    binned_scatter(jnp.ones((3, 2, 8)), meta, jnp.ones((4, 3)))
  with pytest.raises(ValueError, match=r"bias must be \[E, H\]=\(3, 8\), got shape \(3, 7\)"):
    binned_scatter(jnp.ones((3, 2, 8)), meta, jnp.ones((4, 2)), bias=jnp.ones((3, 7)))
  with pytest.raises(ValueError, match=r"expert_indices must be \[T, K\]=\(4, 2\) with bias, "
                     "got None"):
    binned_scatter(jnp.ones((3, 2, 8)), meta, jnp.ones((4, 2)), bias=jnp.ones((3, 8)))
  with pytest.raises(ValueError, match="expert_indices must be integer, got float32"):
    binned_scatter(jnp.ones((3, 2, 8)), meta, jnp.ones((4, 2)), bias=jnp.ones((3, 8)),
                   expert_indices=jnp.ones((4, 2)))
  with pytest.raises(ValueError, match=r"skip_unused=True needs the grouped layout "
                                       r"\(meta.grouped\), got the padded one"):
    binned_gather(jnp.ones((4, 8)), meta, skip_unused=True)
