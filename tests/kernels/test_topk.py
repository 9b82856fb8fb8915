"""top_k_softmax: the router's bias, top-k and softmax against plain NumPy.

The index oracle sorts each row with a Python key that spells out IEEE total order
(NaN sign, value, zero sign) and the index: it shares neither `lax.top_k` nor the
kernel's bit trick. Weights are a float64 softmax of the picked float32 values; the
VJP is checked against autodiff of the plain reference (no custom VJP).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat
from moe_jax.kernels import BlockConfig, reference, top_k_softmax
from moe_jax.kernels import topk

from ._support import Twin, bits, lowers_triton

# (rtol, atol, reason) of the weights against float64.
WEIGHT_TOL = (2e-6, 1e-7, "an f32 exp, K-term sum and division: a few ulps")
# (rtol, atol, reason) of the VJP against autodiff of the reference, both in f32.
GRAD_TOL = (1e-5, 1e-6, "the same f32 formula, summed in another order")


def _np_top_k(z, top_k):
  """[T, K] indices of the K largest of each float32 row in IEEE total order, ties to
  the lower index."""
  def key(row, j):
    v = row[j]
    if np.isnan(v):  # +NaN above everything, -NaN below
      return (2 if np.signbit(v) else 0, 0.0, 0, j)
    # Descending by value, then +0 before -0, then ascending index.
    return (1, -float(v), int(np.signbit(v)), j)
  return np.asarray([sorted(range(row.size), key=lambda j: key(row, j))[:top_k] for row in z],
                    np.int64).reshape(len(z), top_k)


def _np_softmax(values):
  v = np.asarray(values, np.float64)
  with np.errstate(invalid="ignore"):
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# (T, E, K): one token and one expert; T off every block; E off a power of two; K = E;
# K off a power of two; the notebook's E = 128 (16 rows per program); gpt-oss-20b's
# router (E = 32, K = 4) over more tokens than one program holds.
CASES = [(1, 1, 1), (5, 3, 2), (37, 13, 3), (64, 6, 6), (33, 20, 5), (100, 128, 4),
         (300, 32, 4), (70, 40, 8)]
# A block other than the default (16 tokens, EP = E rounded up): 64 tokens per program,
# columns well past E, 2 warps.
CONFIGS = [None, BlockConfig(block_rows=64, block_h=128, num_warps=2, num_stages=1)]


def _inputs(t, e, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(t, e)).astype(np.float32)
  # Ties: a few columns repeat another column's logit exactly.
  if e > 3:
    logits[:, e // 2] = logits[:, 1]
  return logits, rng.normal(size=e).astype(np.float32)


class TopK(Twin):

  # Every case under the default block, and those whose E fits the other one (a
  # block_h below E is an error, tested apart).
  @pytest.mark.parametrize("t,e,k,config", [
      (t, e, k, c) for c in CONFIGS for t, e, k in CASES if c is None or c.block_h >= e])
  def test_matches_numpy(self, t, e, k, config):
    logits, bias = _inputs(t, e)
    z, idx, w = self.pallas(top_k_softmax, jnp.asarray(logits), jnp.asarray(bias), top_k=k,
                            config=config)
    want_z = logits + bias[None, :]  # one f32 add, as the kernel does
    np.testing.assert_array_equal(np.asarray(z), want_z)
    want_idx = _np_top_k(want_z, k)
    np.testing.assert_array_equal(np.asarray(idx), want_idx)
    rtol, atol, _ = WEIGHT_TOL
    np.testing.assert_allclose(np.asarray(w), _np_softmax(np.take_along_axis(want_z, want_idx, 1)),
                               rtol=rtol, atol=atol)

  def test_special_values(self):
    """NaNs of both signs, infinities, signed zeros, all -inf and all-equal rows."""
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    rows = np.array([
        [1.0, nan, inf, 3.0, -nan, -inf, 0.0, 2.0],
        [-inf] * 8,
        [0.0, -0.0, 0.0, 1.0, 1.0, -nan, -0.0, 0.5],
        [2.5] * 8,
        [-nan, -nan, -inf, -inf, nan, -0.0, 0.0, -1.0],
    ], np.float32)
    z, idx, w = self.pallas(top_k_softmax, jnp.asarray(rows), jnp.zeros(8, jnp.float32),
                            top_k=5)
    # The oracle ranks the biased logits the op returns: adding a zero bias turns -0
    # into +0, and a GPU's add returns its canonical (positive) NaN for -NaN where
    # NumPy keeps the sign.
    biased = np.asarray(z)
    np.testing.assert_array_equal(np.isnan(biased), np.isnan(rows))
    finite = ~np.isnan(rows)
    np.testing.assert_array_equal(bits(biased[finite]), bits(rows[finite] + np.float32(0.0)))
    np.testing.assert_array_equal(np.asarray(idx), _np_top_k(biased, 5))
    np.testing.assert_allclose(np.asarray(w), _np_softmax(np.take_along_axis(biased,
                               _np_top_k(biased, 5), 1)), rtol=WEIGHT_TOL[0], atol=WEIGHT_TOL[1])
    # The same bits as XLA's top-k (the "xla" implementation) on every row.
    _, want_idx, _ = top_k_softmax(jnp.asarray(rows), jnp.zeros(8, jnp.float32), top_k=5,
                                   implementation="xla")
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_idx))
    # Signed zeros without the bias (a -0 bias keeps them): +0 before -0.
    z0, idx0, _ = self.pallas(top_k_softmax, jnp.asarray(rows[2:3]),
                              jnp.full(8, -0.0, jnp.float32), top_k=8)
    np.testing.assert_array_equal(np.signbit(np.asarray(z0))[0, :5], np.signbit(rows[2, :5]))
    np.testing.assert_array_equal(np.asarray(idx0), _np_top_k(np.asarray(z0), 8))

  def test_vjp_matches_autodiff(self):
    logits, bias = (jnp.asarray(a) for a in _inputs(45, 20, seed=1))
    dz = jnp.asarray(np.random.default_rng(2).normal(size=(45, 20)), jnp.float32)
    dw = jnp.asarray(np.random.default_rng(3).normal(size=(45, 4)), jnp.float32)

    def loss(fn):
      return lambda x, b: (lambda z, _, w: jnp.sum(z * dz) + jnp.sum(w * dw))(*fn(x, b))
    got = jax.jit(jax.grad(loss(lambda x, b: top_k_softmax(
        x, b, top_k=4, implementation="pallas", interpret=self.INTERPRET)), argnums=(0, 1)))(
            logits, bias)
    want = jax.grad(loss(lambda x, b: reference.top_k_softmax(x, b, 4)), argnums=(0, 1))(
        logits, bias)
    rtol, atol, _ = GRAD_TOL
    for g, r in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=rtol, atol=atol)


@pytest.mark.gpu
class TestTopKGpu(TopK):
  INTERPRET = False


class TestTopKInterpret(TopK):
  INTERPRET = True


def test_xla_matches_numpy():
  logits, bias = _inputs(37, 13)
  z, idx, w = top_k_softmax(jnp.asarray(logits), jnp.asarray(bias), top_k=3,
                            implementation="xla")
  want_idx = _np_top_k(logits + bias[None, :], 3)
  np.testing.assert_array_equal(np.asarray(idx), want_idx)
  np.testing.assert_allclose(np.asarray(w), _np_softmax(np.take_along_axis(
      logits + bias[None, :], want_idx, 1)), rtol=WEIGHT_TOL[0], atol=WEIGHT_TOL[1])


def test_no_tokens():
  z, idx, w = top_k_softmax(jnp.zeros((0, 5), jnp.float32), jnp.ones(5, jnp.float32), top_k=2,
                            implementation="pallas", interpret=True)
  assert z.shape == (0, 5) and idx.shape == (0, 2) and w.shape == (0, 2)
  assert idx.dtype == jnp.int32


def test_default_config():
  assert topk.default_top_k_config(4096, 32) == BlockConfig(block_rows=16, block_h=32,
                                                            num_warps=4, num_stages=1)
  assert topk.default_top_k_config(100, 130).block_h == 256
  assert topk.default_top_k_config(3, 6) == BlockConfig(block_rows=4, block_h=8, num_warps=4,
                                                        num_stages=1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(logits=jnp.zeros((4, 6), jnp.bfloat16)),
     r"logits must be a float32 \[T, E\] array, got shape \(4, 6\) and dtype bfloat16"),
    (dict(logits=jnp.zeros((6,), jnp.float32)),
     r"logits must be a float32 \[T, E\] array, got shape \(6,\)"),
    (dict(bias=jnp.zeros((5,), jnp.float32)),
     r"bias must be a float32 \[E\] array with E=6 .*got shape \(5,\) and dtype float32"),
    (dict(top_k=0), r"top_k must be an int in \[1, E=6\], got 0"),
    (dict(top_k=7), r"top_k must be an int in \[1, E=6\], got 7"),
    (dict(top_k=2.0), r"top_k must be an int in \[1, E=6\], got 2.0"),
    (dict(config=BlockConfig(block_rows=16, block_h=4, num_warps=4, num_stages=1)),
     r"config.block_h must be >= num_experts=6 .*got block_h=4"),
])
def test_errors(kwargs, match):
  args = dict(logits=jnp.zeros((4, 6), jnp.float32), bias=jnp.zeros((6,), jnp.float32), top_k=2,
              implementation="pallas", interpret=True)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    top_k_softmax(args.pop("logits"), args.pop("bias"), **args)


@lowers_triton
def test_lowers_for_gpt_oss_router():
  """gpt-oss-20b's router (T = 4096, E = 32, K = 4) lowers to Triton IR."""
  text = _compat.lower_for_cuda(
      lambda x, b: top_k_softmax(x, b, top_k=4, implementation="pallas", interpret=False),
      jnp.zeros((4096, 32), jnp.float32), jnp.zeros(32, jnp.float32))
  assert topk.KERNEL_NAME in text
