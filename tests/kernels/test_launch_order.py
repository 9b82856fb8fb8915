"""The row kernels' two launch orders (`_tiles.Order`): each program computes the same
block either way, so every output is the same bits, and each order's output is checked
against float64 NumPy here too (each kernel's own file checks its default order more
widely)."""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.kernels import BlockConfig
from moe_jax.kernels import combine as combine_kernel
from moe_jax.kernels import glu as glu_kernel
from moe_jax.kernels import scatter as scatter_kernel
from moe_jax.kernels import slot_dot as slot_dot_kernel

from ._support import (SLOT_DOT_RTOL, TOLERANCES, Twin, bits, f64, normal, np_combine,
                       np_slot_dots, random_index)
from .test_glu import ALPHA, LIMIT, _case, _close, _np_oracle
from .test_scatter import np_scatter, random_dest

# Column and row tails on both axes (H = 200 and T = 13 off the blocks' 32 and 4).
CONFIG = BlockConfig(block_rows=4, block_h=32, num_warps=1)


def _same_either_way(build, check):
  """build(columns_fastest) -> outputs; check(outputs) against float64 for each order,
  and both orders give the same bits."""
  outs = [build(order) for order in (False, True)]
  for out in outs:
    check(out)
  for got, want in zip(outs[1], outs[0]):
    np.testing.assert_array_equal(bits(got), bits(want))


class LaunchOrder(Twin):

  def kw(self, order):
    return dict(config=CONFIG, interpret=self.INTERPRET, columns_fastest=order)

  def test_combine(self):
    src, index = normal(0, (9, 200), jnp.bfloat16), random_index(1, (13, 3), 9)
    weight = normal(2, (13, 3), jnp.float32)
    bias, bias_index = normal(3, (5, 200), jnp.float32), random_index(4, (13, 3), 5)
    rtol, atol, _ = TOLERANCES[jnp.bfloat16]
    want = np_combine(src, index, weight, bias, bias_index)
    _same_either_way(
        lambda order: (combine_kernel.combine_rows(
            src, index, weight, bias, bias_index, out_dtype=jnp.bfloat16, **self.kw(order)),),
        lambda out: np.testing.assert_allclose(f64(out[0]), want, rtol=rtol, atol=atol))

  def test_slot_dots(self):
    src, index = normal(5, (9, 200), jnp.bfloat16), random_index(6, (13, 3), 9)
    g = normal(7, (13, 200), jnp.bfloat16)
    want, magnitude = np_slot_dots(src, index, g)
    _same_either_way(
        lambda order: (slot_dot_kernel.slot_dots(src, index, g, **self.kw(order)),),
        lambda out: np.testing.assert_array_less(np.abs(np.asarray(out[0], np.float64) - want),
                                                 SLOT_DOT_RTOL * magnitude + 1e-30))

  @pytest.mark.parametrize("with_scale", [False, True])
  def test_scatter(self, with_scale):
    src, dest = normal(8, (13, 200), jnp.bfloat16), random_dest(9, 13, 2, 40)
    scale = normal(10, (13, 2), jnp.float32) if with_scale else None
    want = np_scatter(src, dest, 40, scale)
    _same_either_way(
        lambda order: (scatter_kernel.scatter_rows(
            src, dest, scale, None, num_rows=40, **self.kw(order)),),
        lambda out: np.testing.assert_allclose(f64(out[0]), want, rtol=2**-8, atol=0))

  def test_glu_and_its_gradient(self):
    h, bias, g, te, fill, keep = _case(16, 40, [2, 0, 0, -1, 1], [16, 9, 16, 0, 3],
                                       jnp.bfloat16)
    want_a, want_dg, want_du = _np_oracle(h, bias, g, te, keep, "gpt_oss_glu")

    def check(out):
      a, dh, _ = out
      for got, want in ((a, want_a), (dh[:, 0::2], want_dg), (dh[:, 1::2], want_du)):
        _close(got, want, jnp.bfloat16)

    act = (("activation", "gpt_oss_glu"), ("alpha", ALPHA), ("limit", LIMIT))
    config = BlockConfig(block_rows=8, block_h=32)
    kw = lambda order: dict(act=act, config=config, interpret=self.INTERPRET,  # noqa: E731
                            columns_fastest=order)
    _same_either_way(lambda order: (glu_kernel.tile_glu(h, bias, te, fill, **kw(order)),
                                    *glu_kernel.tile_glu_grad(h, bias, g, te, fill,
                                                              **kw(order))), check)


@pytest.mark.gpu
class TestLaunchOrderGpu(LaunchOrder):
  INTERPRET = False


class TestLaunchOrderInterpret(LaunchOrder):
  INTERPRET = True
