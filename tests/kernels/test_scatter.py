"""scatter_rows: the Pallas kernel against float64 NumPy and against the gather it replaces."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import make_dispatch
from moe_jax.kernels import BlockConfig, gather_rows, scatter_rows

from ._support import Twin, bits, f64, normal


def random_dest(seed: int, num_tokens: int, top_k: int, num_rows: int, p_drop: float = 0.25):
  """[T, K] int32 distinct rows of [0, R), each slot dropped (-1) with probability p_drop."""
  rng = np.random.default_rng(seed)
  dest = rng.permutation(num_rows)[:num_tokens * top_k].reshape(num_tokens, top_k)
  dest[rng.random(dest.shape) < p_drop] = -1
  return jnp.asarray(dest, jnp.int32)


def np_scatter(src, dest, num_rows, scale=None):
  src, dest = f64(src), np.asarray(dest)
  out = np.zeros((num_rows, src.shape[1]))
  for (t, k), row in np.ndenumerate(dest):
    if 0 <= row < num_rows:
      out[row] = src[t] * (1.0 if scale is None else f64(scale)[t, k])
  return out


# (T, K, R, H): T and H off every block, R with many unfilled rows, K = 1,
# H = 2880 (GPT-OSS; no 256-wide tile divides it), a tiny H below one tile.
SHAPES = [(13, 2, 40, 200), (5, 4, 23, 2880), (16, 1, 16, 128), (3, 3, 20, 8), (40, 2, 96, 136)]


class Scatter(Twin):

  @pytest.mark.parametrize("t,k,r,h", SHAPES)
  def test_equals_float64_bitwise(self, t, k, r, h):
    src = normal(0, (t, h), jnp.bfloat16)
    dest = random_dest(1, t, k, r)
    got = self.pallas(scatter_rows, src, dest, num_rows=r)
    assert got.shape == (r, h) and got.dtype == src.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float64), np_scatter(src, dest, r))
    want = scatter_rows(src, dest, num_rows=r, implementation="xla")
    np.testing.assert_array_equal(bits(got), bits(want))

  def test_every_slot_dropped_gives_zeros(self):
    src = normal(2, (6, 200), jnp.float32)
    got = self.pallas(scatter_rows, src, jnp.full((6, 2), -1, jnp.int32), num_rows=9)
    np.testing.assert_array_equal(np.asarray(got), np.zeros((9, 200)))

  def test_out_of_range_rows_write_nothing(self):
    src = normal(3, (4, 200), jnp.float32)
    dest = jnp.asarray([[0, 7], [1 << 30, 2], [-5, 3], [6, 4]], jnp.int32)  # R = 7
    got = self.pallas(scatter_rows, src, dest, num_rows=7)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np_scatter(src, dest, 7))

  def test_moves_nan_and_inf_bits_and_zeroes_unfilled_rows(self):
    src = normal(4, (5, 200), jnp.bfloat16).at[1, 3].set(jnp.nan).at[2, 199].set(-jnp.inf)
    dest = random_dest(5, 5, 2, 14, p_drop=0.0)
    got = self.pallas(scatter_rows, src, dest, num_rows=14)
    want = scatter_rows(src, dest, num_rows=14, implementation="xla")
    np.testing.assert_array_equal(bits(got), bits(want))
    unfilled = np.setdiff1d(np.arange(14), np.asarray(dest))
    assert np.all(np.asarray(got, np.float64)[unfilled] == 0)

  @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
  def test_scale_close_to_float64(self, dtype):
    t, k, r, h = 11, 2, 30, 1152
    src = normal(6, (t, h), dtype)
    dest = random_dest(7, t, k, r).at[0, 0].set(-1)
    scale = normal(8, (t, k), jnp.float32).at[0, 0].set(jnp.inf)  # a dropped slot's inf
    got = self.pallas(scatter_rows, src, dest, scale, num_rows=r)
    assert got.dtype == dtype and np.all(np.isfinite(np.asarray(got, np.float64)))
    rtol = 1e-6 if dtype == jnp.float32 else 2**-8
    np.testing.assert_allclose(np.asarray(got, np.float64), np_scatter(src, dest, r, scale),
                               rtol=rtol)
    want = scatter_rows(src, dest, scale, num_rows=r, implementation="xla")
    np.testing.assert_array_equal(bits(got), bits(want))  # same f32 product, same rounding

  @pytest.mark.parametrize("config", [BlockConfig(block_rows=1, block_h=128),
                                      BlockConfig(block_rows=8, block_h=64, num_warps=2)])
  def test_explicit_configs(self, config):
    src = normal(9, (9, 300), jnp.bfloat16)
    dest = random_dest(10, 9, 2, 25)
    got = self.pallas(scatter_rows, src, dest, num_rows=25, config=config)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np_scatter(src, dest, 25))

  def test_rows_used_leaves_only_later_unfilled_rows_open(self):
    """Rows before rows_used and every slot's row hold their values; unfilled rows at or
    past it may hold anything (the layer never reads them)."""
    src = normal(14, (9, 200), jnp.bfloat16)
    dest = random_dest(15, 9, 2, 30)
    got = self.pallas(scatter_rows, src, dest, num_rows=30, rows_used=12)
    defined = np.arange(30) < 12
    defined[np.asarray(dest)[np.asarray(dest) >= 0]] = True
    assert not defined.all()
    np.testing.assert_array_equal(np.asarray(got, np.float64)[defined],
                                  np_scatter(src, dest, 30)[defined])

  @pytest.mark.parametrize("capacity", [3, None])  # binned with drops; dropless tiles
  def test_equals_the_gather_on_a_dispatch(self, capacity):
    """The layer's use: the buffer of `gather_rows(x, gather_token)`, bit for bit."""
    num_tokens, num_experts, top_k, h = 24, 4, 2, 200
    rng = np.random.default_rng(11)
    idx = np.argsort(rng.random((num_tokens, num_experts)) + np.linspace(0, 1, num_experts),
                     axis=1)[:, :top_k]
    meta = make_dispatch(jnp.asarray(idx, jnp.int32), num_experts, capacity)
    x = normal(12, (num_tokens, h), jnp.bfloat16)
    got = self.pallas(scatter_rows, x, meta.combine_index, num_rows=meta.num_rows)
    want = gather_rows(x, meta.gather_token, implementation="xla")
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.gpu
class TestScatterGpu(Scatter):
  INTERPRET = False


class TestScatterInterpret(Scatter):
  INTERPRET = True


@pytest.mark.parametrize("kwargs,match", [
    (dict(dest=jnp.zeros((3, 2), jnp.int32)), r"dest must be an int32 \[T=4, K\] array, got shape \(3, 2\)"),
    (dict(dest=np.zeros((4, 2), np.int64)), r"dest must be an int32 \[T=4, K\] array"),
    (dict(scale=jnp.ones((4, 3))), r"scale must have shape \[T, K\]=\(4, 2\), got shape \(4, 3\)"),
    (dict(num_rows=-1), r"num_rows must be an int >= 0, got -1"),
    (dict(num_rows=2.0), r"num_rows must be an int >= 0, got 2.0"),
    (dict(rows_used=jnp.zeros(2, jnp.int32)),
     r"rows_used must be None or an integer scalar, got shape \(2,\) and dtype int32"),
    (dict(rows_used=1.5), r"rows_used must be None or an integer scalar, got shape \(\) and "
                          r"dtype float"),
])
def test_errors(kwargs, match):
  args = dict(src=jnp.zeros((4, 8)), dest=jnp.zeros((4, 2), jnp.int32), scale=None, num_rows=8,
              rows_used=None)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    scatter_rows(args["src"], args["dest"], args["scale"], num_rows=args["num_rows"],
                 rows_used=args["rows_used"])


def test_rows_used_may_be_traced():
  """The layer's rows_used depends on the routing: a traced scalar."""
  src = normal(16, (6, 64), jnp.float32)
  dest = random_dest(17, 6, 2, 20)
  fn = jax.jit(lambda s, d, n: scatter_rows(s, d, num_rows=20, rows_used=n,
                                            implementation="pallas", interpret=True))
  want = np_scatter(src, dest, 20)
  np.testing.assert_array_equal(np.asarray(fn(src, dest, jnp.int32(20)), np.float64), want)
  defined = np.arange(20) < 7  # a partial bound: the earlier rows and every slot's row
  defined[np.asarray(dest)[np.asarray(dest) >= 0]] = True
  assert not defined.all()
  got = np.asarray(fn(src, dest, jnp.int32(7)), np.float64)
  np.testing.assert_array_equal(got[defined], want[defined])


def test_src_is_not_mutated_and_empty_shapes():
  src = normal(13, (3, 8), jnp.float32)
  before = np.asarray(src).copy()
  out = scatter_rows(src, jnp.zeros((3, 0), jnp.int32), num_rows=5)
  np.testing.assert_array_equal(np.asarray(out), np.zeros((5, 8)))
  np.testing.assert_array_equal(np.asarray(src), before)
