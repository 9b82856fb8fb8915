"""gmm_glu: the experts' up-projection and its bias + GLU in one op, against float64 NumPy.

"xla" and "pallas" run everywhere ("pallas" off a GPU is the Triton gmm then the GLU
kernel, interpreted). On a Hopper GPU "pallas" is the Mosaic GPU kernel with the GLU in
its epilogue (`pytest -m gpu`); it must also match the two ops it replaces. On any
machine that kernel is traced and lowered for CUDA, so API drift fails in CI.

Inputs are chosen so that the products are exact in bf16 (x in {-1, 0, 1}, w in
{-1/2, 0, 1/2}, K <= 256: h is a multiple of 1/2 of magnitude at most 128, 8 significant
bits), so the oracle needs no model of the rounding of h and only the GLU's own
roundings count. Unused
tiles and the rows past each tile's fill hold NaN in x: their outputs must be exact
zeros.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat
from moe_jax.kernels import MatmulConfig, gmm, gmm_glu, tile_glu
from moe_jax.kernels import reference
from moe_jax.kernels.api import mosaic_gmm_kernels

from ._support import f64
from .test_glu import GLU_TOLERANCES, np_glu_and_grad

# (TM, E, K, 2I, tile_group, tile_fill, block_n or None): an unused tile, an expert
# with no tile, fills of 1 and TM, no fill. TM = 128 cases also run the Mosaic kernel:
# a row split (BN = 192, the gpt-oss-20b block), a column split (BN = 256) and a last
# column block past the edge of 2I (320 with BN = 256).
CASES = [
    (16, 3, 48, 40, [0, 0, 2, -1], [16, 9, 1, 0], None),
    (32, 2, 64, 24, [0, 1, 1], None, None),
    (128, 3, 256, 384, [0, 0, 2, -1], [128, 77, 1, 0], 192),
    (128, 2, 128, 512, [0, 1, 1, -1], None, 256),
    (128, 2, 192, 320, [0, 1, 1], [128, 128, 5], 256),
]
ACT = dict(activation="gpt_oss_glu")


def _case(tm, e, k, two_i, tile_group, tile_fill, seed=0):
  rng = np.random.default_rng(seed)
  groups = np.asarray(tile_group, np.int32)
  x = rng.integers(-1, 2, (groups.size * tm, k)).astype(np.float32)
  w = (rng.integers(-1, 2, (e, k, two_i)) / 2).astype(np.float32)
  bias = (2 * rng.standard_normal((e, two_i))).astype(np.float32)
  keep = np.repeat(groups >= 0, tm)
  if tile_fill is not None:
    keep &= np.concatenate([np.arange(tm) < f for f in tile_fill])
    tile_fill = jnp.asarray(tile_fill, jnp.int32)
  x[~keep] = np.nan
  return (jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), jnp.asarray(bias),
          jnp.asarray(groups), tile_fill, keep)


def _products(x, w, groups):
  """h = x @ w[group] in float64 (exact in bf16 here), 0 on unused tiles and NaN rows."""
  tm = x.shape[0] // groups.shape[0]
  rows = np.repeat(np.asarray(groups), tm)
  h = np.einsum("rk,rkf->rf", np.nan_to_num(f64(x)), f64(w)[np.maximum(rows, 0)])
  return np.where((rows >= 0)[:, None], h, 0.0)


def _oracle(x, w, bias, groups, keep, activation):
  tm = x.shape[0] // groups.shape[0]
  rows = np.repeat(np.asarray(groups), tm)
  h = _products(x, w, groups) + f64(bias)[np.maximum(rows, 0)]
  a = np_glu_and_grad(h[:, 0::2], h[:, 1::2], activation)[0]
  return np.where(keep[:, None], a, 0.0)


def _check(got, x, w, bias, groups, keep, activation="gpt_oss_glu"):
  assert got.shape == (x.shape[0], w.shape[2] // 2) and got.dtype == x.dtype
  rtol, atol, _ = GLU_TOLERANCES[jnp.bfloat16]
  np.testing.assert_allclose(f64(got), _oracle(x, w, bias, groups, keep, activation),
                             rtol=rtol, atol=atol)
  assert np.all(f64(got)[~keep] == 0)  # NaN rows too


@pytest.mark.parametrize("activation", ["gpt_oss_glu", "swiglu"])
@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("case", CASES[:2])
def test_matches_float64(case, implementation, activation):
  x, w, bias, groups, fill, keep = _case(*case)
  fn = jax.jit(lambda *a: gmm_glu(*a, activation=activation, implementation=implementation,
                                  interpret=None if implementation == "xla" else True))
  _check(fn(x, w, bias, groups, fill), x, w, bias, groups, keep, activation)


def _check_h(h, x, w, groups, keep):
  """The products h of a training forward: exact (they are exact in bf16 here) on the
  kept rows and on unused tiles (0); rows past a fill hold x's NaN times w."""
  assert h.shape == (x.shape[0], w.shape[2]) and h.dtype == x.dtype
  used = np.repeat(np.asarray(groups) >= 0, x.shape[0] // groups.shape[0])
  checked = keep | ~used
  np.testing.assert_array_equal(f64(h)[checked], _products(x, w, groups)[checked])


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("case", CASES[:2])
def test_return_h_gives_the_products(case, implementation):
  x, w, bias, groups, fill, keep = _case(*case)
  fn = jax.jit(lambda *a: gmm_glu(*a, implementation=implementation, return_h=True,
                                  interpret=None if implementation == "xla" else True, **ACT))
  out, h = fn(x, w, bias, groups, fill)
  _check(out, x, w, bias, groups, keep)
  _check_h(h, x, w, groups, keep)


def _mosaic_config(case, schedule="cooperative"):
  # A ping-pong warpgroup holds a whole [128, BN] accumulator: BN <= 192.
  block_n = case[6] if schedule == "cooperative" or case[6] <= 192 else 128
  return MatmulConfig(block_n=block_n, block_k=64, num_stages=3, row_band=2, backend="mosaic",
                      schedule=schedule)


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", ["cooperative", "pingpong"])
@pytest.mark.parametrize("case", CASES[2:])
def test_mosaic_matches_float64_and_the_two_ops(case, schedule):
  x, w, bias, groups, fill, keep = _case(*case)
  config = _mosaic_config(case, schedule)
  fused = jax.jit(lambda *a: gmm_glu(*a, implementation="pallas", config=config, **ACT))
  got = fused(x, w, bias, groups, fill)
  name = mosaic_gmm_kernels(config).GMM_GLU_NAME
  assert name in jax.jit(fused).lower(x, w, bias, groups, fill).as_text()
  _check(got, x, w, bias, groups, keep)
  # The training forward: the same output, bit for bit, and the products beside it.
  with_h = jax.jit(lambda *a: gmm_glu(*a, implementation="pallas", config=config,
                                      return_h=True, **ACT))
  out, h = with_h(x, w, bias, groups, fill)
  np.testing.assert_array_equal(f64(out), f64(got))
  _check_h(h, x, w, groups, keep)
  # The two ops it replaces, on data without NaN (gmm's h would carry them to the
  # GLU kernel's rows past the fill, which it zeroes too): the same math in f32 and
  # one rounding, so equal but for an ulp where the two compilers' exp differ.
  x = jnp.nan_to_num(x)
  h = gmm(x, w, groups, implementation="pallas", config=config)
  two = tile_glu(h, bias, groups, fill, implementation="pallas", **ACT)
  np.testing.assert_allclose(f64(fused(x, w, bias, groups, fill)), f64(two), rtol=2 ** -7,
                             atol=2 ** -7)


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", ["cooperative", "pingpong"])
def test_mosaic_without_zero_unused_keeps_the_used_rows(schedule):
  """zero_unused=False only stops the unused tile's zero stores (both outputs): every
  used row is the same, bit for bit."""
  case = CASES[2]  # its last tile is unused
  x, w, bias, groups, fill, _ = _case(*case)
  config = _mosaic_config(case, schedule)
  run = lambda zero: jax.jit(lambda *a: gmm_glu(  # noqa: E731
      *a, implementation="pallas", config=config, return_h=True, zero_unused=zero,
      **ACT))(x, w, bias, groups, fill)
  used = np.repeat(np.asarray(groups) >= 0, 128)
  for got, want in zip(run(False), run(True)):
    np.testing.assert_array_equal(f64(got)[used], f64(want)[used])


@pytest.mark.gpu
@pytest.mark.parametrize("return_h", [False, True])
def test_mosaic_pingpong_expert_bands_give_the_same_bits(return_h):
  """row_band="expert" changes which CTA computes a tile, not how: both outputs the same
  bits as under the fixed band."""
  case = CASES[2]
  x, w, bias, groups, fill, _ = _case(*case)
  fixed = _mosaic_config(case, "pingpong")
  run = lambda config: jax.jit(lambda *a: gmm_glu(  # noqa: E731
      *a, implementation="pallas", config=config, return_h=return_h, **ACT))(
          x, w, bias, groups, fill)
  got, want = run(dataclasses.replace(fixed, row_band="expert")), run(fixed)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(f64(g), f64(r))


@pytest.mark.parametrize("zero_unused", [True, False])
@pytest.mark.parametrize("return_h", [False, True])
@pytest.mark.parametrize("schedule", ["cooperative", "pingpong", "pingpong-expert"])
@pytest.mark.parametrize("case", CASES[2:])
def test_mosaic_lowers_for_cuda(case, schedule, return_h, zero_unused):
  """Tracing and Mosaic GPU lowering run on any machine ("pingpong-expert": the
  ping-pong kernel launched in bands of the experts' tiles)."""
  x, w, bias, groups, fill, _ = _case(*case)
  config = _mosaic_config(case, schedule.removesuffix("-expert"))
  if schedule.endswith("-expert"):
    config = dataclasses.replace(config, row_band="expert")
  kernels = mosaic_gmm_kernels(config)
  fn = lambda *a: kernels.gmm_glu(*a, act=reference.act_items("gpt_oss_glu", 1.702, 7.0),
                                  config=config, num_sms=132, return_h=return_h,
                                  zero_unused=zero_unused)
  assert kernels.GMM_GLU_NAME in _compat.lower_for_cuda(fn, x, w, bias, groups, fill)


def test_mosaic_has_no_interpreter():
  x, w, bias, groups, fill, _ = _case(*CASES[2])
  with pytest.raises(ValueError, match="config.backend='mosaic' has no interpreter"):
    gmm_glu(x, w, bias, groups, fill, implementation="pallas", config=_mosaic_config(CASES[2]),
            interpret=True, **ACT)


@pytest.mark.parametrize("schedule, block_n, stages", [("cooperative", 256, 4),
                                                        ("pingpong", 192, 5)])
def test_mosaic_checks_its_shared_memory(schedule, block_n, stages):
  """A 4-deep ring of [128 + 256, 64] blocks leaves no room for the GLU epilogue, nor
  does a 5-deep one of [128 + 192, 64] beside the ping-pong's whole-tile staging."""
  x, w, bias, groups, fill, _ = _case(*CASES[3])
  config = MatmulConfig(block_n=block_n, block_k=64, num_stages=stages, backend="mosaic",
                        schedule=schedule)
  with pytest.raises(ValueError, match=rf"shared memory, got \d+ with num_stages={stages}"):
    mosaic_gmm_kernels(config).gmm_glu(
        x, w, bias, groups, fill, act=reference.act_items("gpt_oss_glu", 1.702, 7.0),
        config=config, num_sms=132)


@pytest.mark.parametrize("args, kwargs, message", [
    (((64, 8), (2, 8, 6), (2, 6), (4,)), {}, None),
    (((64, 8), (2, 7, 6), (2, 6), (4,)), {}, r"rhs must be a floating \[E, K=8, 2I\]"),
    (((64, 8), (2, 8, 5), (2, 5), (4,)), {}, r"rhs must be .* 2I even"),
    (((64, 8), (2, 8, 6), (2, 4), (4,)), {}, r"bias must be a floating \[E, 2I=6\]"),
    (((64, 8), (2, 8, 6), (2, 6), (3,)), {}, "got R=64 rows for num_tiles=3"),
    (((64, 8), (2, 8, 6), (2, 6), (4,)), {"activation": "relu"}, "activation must be one of"),
    (((64, 8), (2, 8, 6), (2, 6), (4,)), {"tile_fill": (3,)},
     r"tile_fill must be None or an int32 \(4,\)"),
])
def test_errors_name_the_argument(args, kwargs, message):
  x, w, bias, groups = (jnp.zeros(a, jnp.int32 if len(a) == 1 else jnp.float32) for a in args)
  kwargs = {"activation": "swiglu", **kwargs}
  if "tile_fill" in kwargs:
    kwargs["tile_fill"] = jnp.zeros(kwargs["tile_fill"], jnp.int32)
  for impl in ("xla", "pallas"):
    if message is None:  # the valid call of the table
      assert gmm_glu(x, w, bias, groups, implementation=impl, **kwargs).shape == (64, 3)
      continue
    with pytest.raises(ValueError, match=message):
      gmm_glu(x, w, bias, groups, implementation=impl, **kwargs)
