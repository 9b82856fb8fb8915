"""tile_glu and tile_glu_grad: the Pallas kernels and "xla" against float64 NumPy.

The gradient oracle is the GLU's derivative written out in NumPy (not autodiff), and
the bias-gradient sums are checked against NumPy sums of the rounded dh. Unused tiles
and the rows past each tile's fill hold NaN in h and g: the outputs there must be exact
zeros.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.kernels import BlockConfig, tile_glu, tile_glu_grad

from ._support import Twin, bits, f64

ALPHA, LIMIT = 1.702, 7.0
# (rtol, atol, reason) against float64, keyed by h's dtype. The inputs are exact in
# float64, so only the kernel's roundings count.
GLU_TOLERANCES = {
    jnp.float32: (2e-5, 2e-5, "f32 sigmoid and products: a few ulps of values up to ~60"),
    jnp.bfloat16: (1e-2, 2e-2, "f32 math, one final rounding to bf16 (2^-8 relative)"),
}
# (TM, I, tile_expert, tile_fill, config): I off the 32-column block (tails), a block of
# rows smaller than the tile, an unused tile between used ones, fills of 0 and TM.
CASES = [
    (16, 40, [2, 0, 0, -1, 1], [16, 9, 16, 0, 3], None),
    (16, 40, [2, 0, 0, -1, 1], None, BlockConfig(block_rows=8, block_h=16)),
    (128, 96, [0, 1, -1], [128, 70, 0], None),
    (32, 7, [1, -1, 0], [5, 32, 32], BlockConfig(block_rows=32, block_h=8, num_warps=2)),
]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_glu_and_grad(gate, up, activation):
  """(a, d a / d gate, d a / d up), elementwise float64."""
  if activation == "swiglu":
    s = _sigmoid(gate)
    return gate * s * up, up * (s + gate * s * (1 - s)), gate * s
  g = np.minimum(gate, LIMIT)
  u = np.clip(up, -LIMIT, LIMIT)
  s = _sigmoid(ALPHA * g)
  d_gate = np.where(gate < LIMIT, (u + 1) * (s + ALPHA * g * s * (1 - s)), 0.0)
  d_up = np.where(np.abs(up) < LIMIT, g * s, 0.0)
  return (u + 1) * g * s, d_gate, d_up


def _case(tm, num_i, tile_expert, tile_fill, dtype, seed=0):
  rng = np.random.default_rng(seed)
  tile_expert = np.asarray(tile_expert, np.int32)
  num_rows, num_experts = tile_expert.size * tm, tile_expert.max() + 1
  # Scale 4 puts gates above the limit and ups outside [-limit, limit].
  h = (4 * rng.standard_normal((num_rows, 2 * num_i))).astype(np.float32)
  g = rng.standard_normal((num_rows, num_i)).astype(np.float32)
  unused = np.repeat(tile_expert < 0, tm)
  h[unused], g[unused] = np.nan, np.nan
  bias = rng.standard_normal((num_experts, 2 * num_i)).astype(np.float32)
  keep = ~unused
  if tile_fill is not None:
    keep &= np.concatenate([np.arange(tm) < f for f in tile_fill])
    h[~keep], g[~keep] = np.nan, np.nan  # rows past the fill too
    tile_fill = jnp.asarray(tile_fill, jnp.int32)
  return (jnp.asarray(h, dtype), jnp.asarray(bias), jnp.asarray(g, dtype),
          jnp.asarray(tile_expert), tile_fill, keep)


def _np_oracle(h, bias, g, tile_expert, keep, activation):
  """(a [R, I], d_gate [R, I], d_up [R, I]) in float64, 0 where not kept."""
  tm = h.shape[0] // tile_expert.shape[0]
  te = np.repeat(np.asarray(tile_expert), tm)
  hb = np.nan_to_num(f64(h)) + f64(bias)[np.maximum(te, 0)]
  a, d_gate, d_up = np_glu_and_grad(hb[:, 0::2], hb[:, 1::2], activation)
  g = np.nan_to_num(f64(g))
  k = keep[:, None]
  return np.where(k, a, 0.0), np.where(k, g * d_gate, 0.0), np.where(k, g * d_up, 0.0)


def _close(got, want, dtype):
  rtol, atol, _ = GLU_TOLERANCES[dtype]
  np.testing.assert_allclose(f64(got), want, rtol=rtol, atol=atol)


class Glu(Twin):

  @pytest.mark.parametrize("activation", ["gpt_oss_glu", "swiglu"])
  @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
  @pytest.mark.parametrize("tm,num_i,tile_expert,tile_fill,config", CASES)
  def test_forward_and_grad(self, tm, num_i, tile_expert, tile_fill, config, dtype, activation):
    h, bias, g, te, fill, keep = _case(tm, num_i, tile_expert, tile_fill, dtype)
    kw = dict(activation=activation, config=config)
    a = self.pallas(tile_glu, h, bias, te, fill, **kw)
    dh, sums = self.pallas(tile_glu_grad, h, bias, g, te, fill, **kw)
    want_a, want_dg, want_du = _np_oracle(h, bias, g, te, keep, activation)
    assert a.shape == want_a.shape and a.dtype == dtype and dh.dtype == dtype
    _close(a, want_a, dtype)
    _close(dh[:, 0::2], want_dg, dtype)
    _close(dh[:, 1::2], want_du, dtype)
    assert np.all(f64(a)[~keep] == 0) and np.all(f64(dh)[~keep] == 0)  # NaN rows too
    # The sums are of dh as stored: NumPy's float64 sums of the kernel's own dh.
    per_tile = f64(dh).reshape(te.shape[0], tm, -1).sum(axis=1)
    np.testing.assert_allclose(np.asarray(sums, np.float64), per_tile, rtol=1e-5, atol=1e-4)

  def test_matches_xla(self):
    h, bias, g, te, fill, _ = _case(16, 40, [2, 0, 0, -1, 1], [16, 9, 16, 0, 3], jnp.bfloat16)
    kw = dict(activation="gpt_oss_glu")
    a = self.pallas(tile_glu, h, bias, te, fill, **kw)
    ref = tile_glu(h, bias, te, fill, implementation="xla", **kw)
    # The same f32 math and one rounding: equal but for an ulp where exp differs.
    np.testing.assert_allclose(f64(a), f64(ref), rtol=2 ** -7, atol=2 ** -7)

  @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
  def test_grad_without_zero_unused_keeps_the_used_rows(self, dtype):
    """zero_unused=False only stops the unused tiles' dh stores: the used rows and every
    sum (0 on unused tiles) are the same, bit for bit, as with them. Blocks of 8 rows
    put whole blocks past the fill of used tiles (fills 3 and 0 of 16): those rows,
    NaN in h and g, still come out as zeros. (The interpreter leaves an unwritten f32
    output NaN, a packed bf16 one 0: the f32 case is the one that sees a store missed.)"""
    tile_expert = [2, 0, 0, -1, 1, -1, 1]
    h, bias, g, te, fill, keep = _case(16, 40, tile_expert, [16, 9, 16, 0, 3, 0, 0], dtype)
    run = lambda zero: self.pallas(tile_glu_grad, h, bias, g, te, fill,  # noqa: E731
                                   activation="gpt_oss_glu", zero_unused=zero,
                                   config=BlockConfig(block_rows=8, block_h=16))
    (dh0, sums0), (dh1, sums1) = run(True), run(False)
    used = np.repeat(np.asarray(tile_expert) >= 0, 16)
    np.testing.assert_array_equal(bits(dh1)[used], bits(dh0)[used])
    assert np.all(f64(dh1)[used & ~keep] == 0)  # past the fill: zeros, not NaN
    np.testing.assert_array_equal(bits(sums1), bits(sums0))
    assert not np.any(f64(sums1)[np.asarray(tile_expert) < 0])


@pytest.mark.gpu
class TestGluGpu(Glu):
  INTERPRET = False


class TestGluInterpret(Glu):
  INTERPRET = True


@pytest.mark.parametrize("args, kwargs, message", [
    (((8, 5), (2, 5), (2,)), {}, r"h must be a floating \[R, 2I\] array \(even"),
    (((8, 6), (2, 4), (2,)), {}, r"bias must be a floating \[E, 2I=6\]"),
    (((9, 6), (2, 6), (2,)), {}, "got R=9 rows for num_tiles=2"),
    (((8, 6), (2, 6), (2,)), {"activation": "relu"}, "activation must be one of"),
    (((8, 6), (2, 6), (2,)), {"tile_fill": (3,)}, r"tile_fill must be None or an int32 \(2,\)"),
    (((8, 6), (2, 6), (2,)), {"config": BlockConfig(block_rows=8, block_h=4)},
     "block_rows must divide the tile height TM=4"),
])
def test_errors_name_the_argument(args, kwargs, message):
  h, bias, te = (jnp.zeros(a, jnp.int32 if len(a) == 1 else jnp.float32) for a in args)
  kwargs = {"activation": "swiglu", **kwargs}
  if "tile_fill" in kwargs:
    kwargs["tile_fill"] = jnp.zeros(kwargs["tile_fill"], jnp.int32)
  with pytest.raises(ValueError, match=message):
    tile_glu(h, bias, te, implementation="pallas", **kwargs)


def test_grad_checks_g():
  h, bias, te = jnp.zeros((8, 6)), jnp.zeros((2, 6)), jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match=r"g must be a floating \[R, I\]=\(8, 3\)"):
    tile_glu_grad(h, bias, jnp.zeros((8, 6)), te, activation="swiglu")
