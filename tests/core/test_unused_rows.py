"""The layer never reads the grouped layout's unused rows, so it may leave them unwritten.

moe_forward asks the pack (`scatter_rows(rows_used=)`), the grouped matmuls and the
GLU's gradient (`zero_unused=False`) to skip those rows; on a Hopper GPU they then hold whatever the
buffer held. Here wrappers around those kernels fill them with NaN instead, and the
layer's output and every gradient must come out exactly as without the wrappers, on
"pallas" (interpreted Triton kernels) in dropless and grouped binned mode.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import MoEConfig, MoEParams, forward, kernels, moe_forward, routing


def _poisoned_scatter_rows(real, src, dest, scale=None, *, num_rows, rows_used=None, **kw):
  out = real(src, dest, scale, num_rows=num_rows, rows_used=rows_used, **kw)
  if rows_used is None:
    return out
  filled = jnp.zeros((num_rows,), bool).at[jnp.where(dest >= 0, dest, num_rows)].set(
      True, mode="drop")
  open_rows = (jnp.arange(num_rows) >= rows_used) & ~filled
  return jnp.where(open_rows[:, None], jnp.nan, out).astype(out.dtype)


def _poison_unused(out, tile_group):
  tiles = tile_group.shape[0]
  unused = jnp.repeat(tile_group < 0, out.shape[0] // tiles)
  return jnp.where(unused[:, None], jnp.nan, out).astype(out.dtype)


def _poisoned_gmm(real, lhs, rhs, tile_group, *args, zero_unused=True, **kw):
  out = real(lhs, rhs, tile_group, *args, zero_unused=zero_unused, **kw)
  return out if zero_unused else _poison_unused(out, tile_group)


def _poisoned_gmm_glu(real, lhs, rhs, bias, tile_group, *args, zero_unused=True, **kw):
  out = real(lhs, rhs, bias, tile_group, *args, zero_unused=zero_unused, **kw)
  if zero_unused:
    return out
  return jax.tree.map(lambda o: _poison_unused(o, tile_group), out)


def _poisoned_tile_glu_grad(real, h, bias, g, tile_expert, *args, zero_unused=True, **kw):
  dh, sums = real(h, bias, g, tile_expert, *args, zero_unused=zero_unused, **kw)
  return (dh if zero_unused else _poison_unused(dh, tile_expert)), sums


def _params(cfg):
  keys = jax.random.split(jax.random.key(0), 6)
  return MoEParams(*(0.3 * jax.random.normal(k, s)
                     for k, s in zip(keys, forward.param_shapes(cfg))))


@pytest.mark.parametrize("capacity_factor", [None, 2.0])  # dropless; grouped binned
def test_poisoned_unused_rows_change_nothing(monkeypatch, capacity_factor):
  cfg = MoEConfig(num_experts=4, top_k=2, hidden_size=32, intermediate_size=16,
                  capacity_factor=capacity_factor, precision="highest", implementation="pallas")
  params = _params(cfg)
  x = jax.random.normal(jax.random.key(1), (64, cfg.hidden_size))
  indices = routing.route(x, params.router_weight, params.router_bias, top_k=cfg.top_k)[1]
  meta = forward.layer_dispatch(indices, cfg)
  assert meta.grouped and bool(jnp.any(meta.tile_expert < 0))  # some tiles are unused

  def loss(p, x):
    y, _ = moe_forward(p, x, cfg)
    return jnp.sum(y * jnp.cos(y)), y

  def run():
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, grads

  y0, g0 = run()
  for name, wrapper in (("scatter_rows", _poisoned_scatter_rows), ("gmm", _poisoned_gmm),
                        ("gmm_glu", _poisoned_gmm_glu),
                        ("tile_glu_grad", _poisoned_tile_glu_grad)):
    monkeypatch.setattr(kernels, name, functools.partial(wrapper, getattr(kernels, name)))
  y1, g1 = run()
  np.testing.assert_array_equal(np.asarray(y1), np.asarray(y0))
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

