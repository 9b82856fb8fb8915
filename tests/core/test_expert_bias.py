"""bias_glu, grouped_glu and add_tile_bias: values and custom VJPs against float64 NumPy.

bias_glu runs its "xla" implementation here; the Pallas kernels behind "pallas" are
checked against the same float64 oracle in `tests/kernels/test_glu.py`.

The gradients are checked against central finite differences of a float64 NumPy
forward, along random directions, on a tile layout with unused tiles (-1) and on the
binned layout (tile e = expert e).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.experts import add_tile_bias, bias_glu, dropless_experts, grouped_glu
from tests.core.reference import glu_np

E, TM, I = 3, 4, 5
TILE_EXPERT = np.array([2, 0, 0, -1, 1], np.int32)  # expert 0 has two tiles, one unused


def _row_bias64(bias, tile_expert, rows_per_tile):
  """The bias of every row: [R, F] (0 on unused tiles), or [E, C, F] binned."""
  if tile_expert is None:
    return np.broadcast_to(bias[:, None, :], (bias.shape[0], rows_per_tile, bias.shape[1]))
  per_tile = np.where((tile_expert >= 0)[:, None], bias[np.maximum(tile_expert, 0)], 0.0)
  return np.repeat(per_tile, rows_per_tile, axis=0)


def _layout(binned):
  tile_expert = None if binned else TILE_EXPERT
  lead = (E, TM) if binned else (TILE_EXPERT.size * TM,)
  return tile_expert, lead


def _fd_check(f64, jax_fn, args, cot, n_dirs=4, eps=1e-6):
  """<grad, v> of jax_fn (float32, via jax.vjp) vs finite differences of f64, per argument."""
  out, vjp = jax.vjp(jax_fn, *(jnp.asarray(a, jnp.float32) for a in args))
  grads = vjp(jnp.asarray(cot, out.dtype))
  rng = np.random.default_rng(7)
  for i, g in enumerate(grads):
    for _ in range(n_dirs):
      v = rng.standard_normal(args[i].shape)
      plus = [a + eps * v if j == i else a for j, a in enumerate(args)]
      minus = [a - eps * v if j == i else a for j, a in enumerate(args)]
      fd = np.sum(cot * (f64(*plus) - f64(*minus))) / (2 * eps)
      got = float(np.sum(np.asarray(g, np.float64) * v))
      assert got == pytest.approx(fd, rel=1e-4, abs=1e-4), (i, got, fd)


@pytest.mark.parametrize("binned", [False, True], ids=["tiles", "binned"])
@pytest.mark.parametrize("activation", ["gpt_oss_glu", "swiglu"])
def test_bias_glu_value_and_vjp(binned, activation):
  tile_expert, lead = _layout(binned)
  rng = np.random.default_rng(0)
  # Scale 4 puts some gates above the limit and some ups outside [-limit, limit].
  h = 4.0 * rng.standard_normal(lead + (2 * I,))
  bias = rng.standard_normal((E, 2 * I))
  cot = rng.standard_normal(lead + (I,))
  te = None if binned else jnp.asarray(tile_expert)

  used = 1.0 if binned else np.repeat(tile_expert >= 0, TM)[:, None]  # unused tiles give 0

  def f64(h, bias):
    return used * glu_np(h + _row_bias64(bias, tile_expert, TM), activation)

  def f(h, bias):
    return bias_glu(h, bias, te, activation=activation, implementation="xla")

  got = f(jnp.asarray(h, jnp.float32), jnp.asarray(bias, jnp.float32))
  assert got.shape == lead + (I,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, f64(h, bias), rtol=1e-5, atol=1e-5)
  _fd_check(f64, f, (h, bias), cot)


@pytest.mark.parametrize("activation", ["gpt_oss_glu", "swiglu"])
def test_grouped_glu_value_and_vjp(activation):
  """The op that runs fused when not differentiated: its value, and the VJP of its
  two-op forward, with respect to x, w and the bias."""
  tile_expert = np.array([0, 0, 1, 2, -1], np.int32)  # sorted by expert, as "xla" needs
  rng = np.random.default_rng(2)
  tm, k = 16, 3  # the grouped matmuls take tiles of >= 16 rows
  x = rng.standard_normal((tile_expert.size * tm, k))
  w = 1.5 * rng.standard_normal((E, k, 2 * I))
  bias = rng.standard_normal((E, 2 * I))
  cot = rng.standard_normal((tile_expert.size * tm, I))
  te = jnp.asarray(tile_expert)
  rows = np.repeat(tile_expert, tm)
  used = (rows >= 0)[:, None]

  def f64(x, w, bias):
    h = np.einsum("rk,rkf->rf", x, w[np.maximum(rows, 0)])
    return used * glu_np(h + _row_bias64(bias, tile_expert, tm), activation)

  def f(x, w, bias):
    return grouped_glu(x, w, bias, te, activation=activation, implementation="xla")

  got = jax.jit(f)(*(jnp.asarray(a, jnp.float32) for a in (x, w, bias)))
  np.testing.assert_allclose(got, f64(x, w, bias), rtol=1e-5, atol=1e-5)
  _fd_check(f64, f, (x, w, bias), cot)


@pytest.mark.parametrize("binned", [False, True], ids=["tiles", "binned"])
def test_add_tile_bias_value_and_vjp(binned):
  tile_expert, lead = _layout(binned)
  rng = np.random.default_rng(1)
  h = rng.standard_normal(lead + (6,))
  bias = rng.standard_normal((E, 6))
  cot = rng.standard_normal(lead + (6,))
  te = None if binned else jnp.asarray(tile_expert)

  def f64(h, bias):
    return h + _row_bias64(bias, tile_expert, TM)

  got = add_tile_bias(jnp.asarray(h, jnp.float32), jnp.asarray(bias, jnp.float32), te)
  np.testing.assert_allclose(got, f64(h, bias), rtol=1e-6, atol=1e-6)
  _fd_check(f64, lambda h, b: add_tile_bias(h, b, te), (h, bias), cot)


def test_bf16_keeps_dtypes_and_sums_the_bias_gradient_in_f32():
  """bf16 rows: outputs and dh stay bf16; d(bias) sums 1024 rows per expert exactly."""
  rows, f = 1024, 8
  tile_expert = jnp.asarray([0, 1], jnp.int32)
  h = jnp.ones((2 * rows, 2 * f), jnp.bfloat16)
  bias = jnp.ones((2, 2 * f), jnp.bfloat16)
  assert bias_glu(h, bias, tile_expert, activation="swiglu").dtype == jnp.bfloat16
  out, vjp = jax.vjp(lambda h, b: add_tile_bias(h, b, tile_expert), h, bias)
  assert out.dtype == jnp.bfloat16
  dh, db = vjp(jnp.full(out.shape, 1.0 + 2.0 ** -7, jnp.bfloat16))
  assert dh.dtype == jnp.bfloat16 and db.dtype == jnp.bfloat16
  # 1024 * (1 + 2^-7) = 1032 is a bf16 value; a sum kept in bf16 would stop growing
  # once the running total's spacing exceeds the addend (at 256).
  np.testing.assert_array_equal(np.asarray(db, np.float32), np.full((2, 2 * f), 1032.0))


def test_zero_unused_false_refuses_a_down_bias():
  rows, tile_expert = jnp.zeros((32, 8)), jnp.asarray([0, -1], jnp.int32)
  w_up, b_up = jnp.zeros((2, 8, 12)), jnp.zeros((2, 12))
  with pytest.raises(ValueError, match=r"zero_unused=False needs down_proj_bias=None"):
    dropless_experts(rows, tile_expert, w_up, b_up, jnp.zeros((2, 6, 8)), jnp.zeros((2, 8)),
                     activation="swiglu", zero_unused=False)


@pytest.mark.parametrize("fn, args, message", [
    (add_tile_bias, ((8, 6), (3, 5), (2,)), r"bias must be \[E, 6\]"),
    (add_tile_bias, ((9, 6), (3, 6), (2,)), "multiple of tile_expert's length"),
    (add_tile_bias, ((8, 6), (3, 6), None), r"h must be \[E=3, C, F\]"),
    (lambda h, b, t: bias_glu(h, b, t, activation="swiglu"), ((8, 5), (3, 5), (2,)),
     "must be even"),
])
def test_errors_name_the_argument(fn, args, message):
  h, bias, te = (None if a is None else jnp.zeros(a, jnp.int32 if len(a) == 1 else jnp.float32)
                 for a in args)
  with pytest.raises(ValueError, match=message):
    fn(h, bias, te)


def test_expert_weight_shapes_are_checked():
  # Every wrong weight is named, against the rows' H; an odd 2I and a bad rank too.
  from moe_jax.experts import binned_experts, glu
  e, h, i = 3, 8, 4
  w = dict(gate_up_proj=jnp.ones((e, h, 2 * i)), gate_up_proj_bias=jnp.ones((e, 2 * i)),
           down_proj=jnp.ones((e, i, h)), down_proj_bias=None)
  kw = dict(activation="swiglu")
  with pytest.raises(ValueError, match=r"gate_up_proj_bias must have shape \(3, 8\) .*got "
                     r"\(3, 7\); down_proj must have shape \(3, 4, 8\) .*got \(3, 8, 4\)"):
    binned_experts(jnp.ones((e, 2, h)), **dict(w, gate_up_proj_bias=jnp.ones((e, 7)),
                                               down_proj=jnp.ones((e, h, i))), **kw)
  with pytest.raises(ValueError, match=r"gate_up_proj must have shape \(3, 9, 8\).*got "
                     r"\(3, 8, 8\)"):
    binned_experts(jnp.ones((e, 2, 9)), **w, **kw)
  # gate_up_proj the odd one out: 2I comes from the two weights that agree on it, so the
  # error names gate_up_proj alone.
  with pytest.raises(ValueError, match=r"^bad expert weights: gate_up_proj must have shape "
                     r"\(3, 8, 8\) .*got \(3, 8, 6\)$"):
    binned_experts(jnp.ones((e, 2, h)), **dict(w, gate_up_proj=jnp.ones((e, h, 6))), **kw)
  with pytest.raises(ValueError, match=r"buf must have shape \[E, C, H\], got shape \(6, 8\)"):
    binned_experts(jnp.ones((6, h)), **w, **kw)
  with pytest.raises(ValueError, match=r"gate_up_proj must have shape \[E, H=8, 2I\], got "
                     r"shape \(8, 8\)"):
    dropless_experts(jnp.ones((16, h)), jnp.zeros((1,), jnp.int32),
                     **dict(w, gate_up_proj=jnp.ones((h, 2 * i))), **kw)
  with pytest.raises(ValueError, match=r"gate_up must have an even last dimension 2I .*got "
                     r"shape \(2, 7\)"):
    glu(jnp.ones((2, 7)), **kw)
