"""routed_gather: the router, dispatch and pack as one op, and its VJP against float64.

Its values are those of the three stage functions; its VJP is checked against
central finite differences of a float64 NumPy forward (float32 inputs), and its
bfloat16 x gradient, which one combine kernel computes with the router's term inside,
against the float64 VJP written out (one rounding to bf16).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import moe_jax
from moe_jax import binned, routing
from moe_jax.config import MoEConfig
from tests.core.reference import route_np

T, H, E, K = 24, 32, 6, 2
IMPLS = ["xla", "pallas"]
# (router, capacity_factor): gpt-oss top-k then softmax; Mixtral softmax then top-k;
# binned (padded layout with "xla", grouped where it fits with "pallas") and dropless.
ROUTINGS = [("gpt_oss", None), ("gpt_oss", 1.0), ("softmax_topk", 0.5)]


def _config(impl, router, capacity_factor, dtype="float32"):
  return MoEConfig(num_experts=E, top_k=K, hidden_size=H, intermediate_size=8,
                   capacity_factor=capacity_factor, router=router, dtype=dtype,
                   implementation=impl, precision="highest")


def _front(cfg):
  return moe_jax.forward.router_front(cfg)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((T, H)), 0.5 * rng.standard_normal((E, H)), rng.standard_normal(E)


def _np_forward(x, w, b, cfg, idx, gather_token):
  """(logits + bias, weights at the fixed indices idx, rows) in float64."""
  z = x @ w.T + b
  if cfg.router == "gpt_oss":
    v = np.take_along_axis(z, idx, -1)
    e = np.exp(v - v.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)
  else:
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    v = np.take_along_axis(p, idx, -1)
    weights = v / v.sum(-1, keepdims=True)
  rows = np.where((gather_token >= 0)[:, None], x[np.maximum(gather_token, 0)], 0.0)
  return z, weights, rows


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("router,capacity_factor", ROUTINGS)
def test_values_are_the_stage_functions(impl, router, capacity_factor):
  cfg = _config(impl, router, capacity_factor)
  x, w, b = (jnp.asarray(a, jnp.float32) for a in _inputs())
  z, idx, weights, meta, rows = binned.routed_gather(x, w, b, _front(cfg))
  z_ref, idx_ref, w_ref = moe_jax.route(x, w, b, top_k=K, kind=router, precision="highest",
                                        implementation=impl)
  meta_ref = moe_jax.layer_dispatch(idx_ref, cfg)
  for got, want in [(z, z_ref), (idx, idx_ref), (weights, w_ref),
                    (rows, moe_jax.binned_gather(x, meta_ref, implementation=impl))]:
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(meta), jax.tree.leaves(meta_ref)):
    np.testing.assert_array_equal(got, want)
  _, idx64, _ = route_np(x, w, b, K, kind=router)
  np.testing.assert_array_equal(idx, idx64)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("router,capacity_factor", ROUTINGS)
def test_vjp_matches_float64_finite_differences(impl, router, capacity_factor):
  cfg = _config(impl, router, capacity_factor)
  args = _inputs(1)
  fn = jax.jit(lambda x, w, b: binned.routed_gather(x, w, b, _front(cfg)))
  (z, idx, weights, meta, rows), vjp = jax.vjp(fn, *(jnp.asarray(a, jnp.float32) for a in args))
  rng = np.random.default_rng(2)
  cots = [rng.standard_normal(a.shape) for a in (z, weights, rows)]
  zero_meta = jax.tree.map(lambda a: np.zeros(a.shape, jax.dtypes.float0), meta)
  idx_cot = np.zeros(idx.shape, jax.dtypes.float0)
  grads = vjp((jnp.asarray(cots[0], jnp.float32), idx_cot, jnp.asarray(cots[1], jnp.float32),
               zero_meta, jnp.asarray(cots[2], jnp.float32)))
  idx, gather_token = np.asarray(idx), np.asarray(meta.gather_token)
  flat = lambda a: np.asarray(a).reshape(-1, H) if a.ndim > 2 else np.asarray(a)
  cots[2] = flat(cots[2])

  def f64(*a):  # <cotangents, outputs> at the fixed routing
    return sum(np.sum(c * flat(o)) for c, o in zip(cots, _np_forward(*a, cfg, idx, gather_token)))

  eps = 1e-6
  for i, g in enumerate(grads):
    for _ in range(3):
      v = rng.standard_normal(args[i].shape)
      plus = [a + eps * v if j == i else a for j, a in enumerate(args)]
      minus = [a - eps * v if j == i else a for j, a in enumerate(args)]
      fd = (f64(*plus) - f64(*minus)) / (2 * eps)
      got = float(np.sum(np.asarray(g, np.float64) * v))
      assert got == pytest.approx(fd, rel=1e-4, abs=1e-4), (i, got, fd)


@pytest.mark.parametrize("impl", IMPLS + [
    pytest.param("pallas", marks=pytest.mark.gpu, id="pallas-compiled")])
def test_bf16_x_gradient_is_the_float64_vjp_rounded_once(impl):
  # The bfloat16 path: the pack's gradient (a sum of row cotangents per token) and the
  # router's (dlogits @ W) meet in one combine kernel, in float32, rounded once.
  cfg = _config(impl, "gpt_oss", None, dtype="bfloat16")
  x, w, b = _inputs(3)
  x16 = jnp.asarray(x, jnp.bfloat16)
  w16 = jnp.asarray(w, jnp.bfloat16)
  fn = jax.jit(lambda x, w, b: binned.routed_gather(x, w, b, _front(cfg)))
  (z, idx, weights, meta, rows), vjp = jax.vjp(fn, x16, w16, jnp.asarray(b, jnp.float32))
  rng = np.random.default_rng(4)
  dz = rng.standard_normal(z.shape).astype(np.float32)
  dw = rng.standard_normal(weights.shape).astype(np.float32)
  drows = jnp.asarray(rng.standard_normal(rows.shape), jnp.bfloat16)
  zero_meta = jax.tree.map(lambda a: np.zeros(a.shape, jax.dtypes.float0), meta)
  dx = vjp((dz, np.zeros(idx.shape, jax.dtypes.float0), dw, zero_meta, drows))[0]
  assert dx.dtype == jnp.bfloat16
  # The float64 VJP: softmax's over the picked logits, scattered into dz; the pack's
  # transpose sums each token's row cotangents.
  p = np.asarray(weights, np.float64)
  dv = p * (dw - np.sum(dw * p, -1, keepdims=True))
  dlogits = dz.astype(np.float64)
  np.put_along_axis(dlogits, np.asarray(idx), np.take_along_axis(dlogits, np.asarray(idx), -1)
                    + dv, -1)
  token = np.asarray(meta.gather_token)
  want = dlogits @ np.asarray(w16, np.float64)
  np.add.at(want, np.maximum(token, 0), np.where((token >= 0)[:, None],
                                                 np.asarray(drows, np.float64), 0.0))
  got = np.asarray(dx, np.float64)
  # One rounding to bf16 (2^-9 relative) of an f32 sum; dlogits's split adds 2^-17.
  np.testing.assert_allclose(got, want, rtol=2.0 ** -8, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dtype,num_experts,fused", [
    ("bfloat16", E, True), ("float32", E, False), ("float16", E, False),
    ("bfloat16", binned.FUSED_MAX_EXPERTS + 1, False)])
def test_layer_x_gradient_has_no_separate_router_product(dtype, num_experts, fused):
  """On bfloat16 x with E <= FUSED_MAX_EXPERTS the layer's backward computes the router's
  [T, H] input gradient inside the combine: no dot_general makes a [T, H] result in its
  jaxpr (otherwise XLA's product does)."""
  cfg = dataclasses.replace(_config("pallas", "gpt_oss", None, dtype=dtype),
                            num_experts=num_experts)
  params = moe_jax.init_params(jax.random.key(0), cfg)
  x = jnp.ones((T, H), jnp.float32)
  jaxpr = jax.make_jaxpr(jax.grad(lambda x: moe_jax.moe_forward(params, x, cfg)[0].sum()))(x)
  th_dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"
             and e.outvars[0].aval.shape == (T, H)]
  assert (not th_dots) == fused


def _equations(jaxpr):
  """Every equation of a jaxpr, sub-jaxprs (jit, custom_vjp) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          yield from _equations(getattr(inner, "jaxpr", inner))


def test_errors_name_the_argument():
  cfg = _config("xla", "gpt_oss", None)
  x, w, b = (jnp.asarray(a, jnp.float32) for a in _inputs())
  with pytest.raises(ValueError, match=r"router_bias must have shape \[E\]=\(6,\), got shape \(1,\)"):
    binned.routed_gather(x, w, b[:1], _front(cfg))
  with pytest.raises(ValueError, match=r"router_weight must have shape \[E, H=32\]"):
    binned.routed_gather(x, w[:, :-1], b, _front(cfg))
  with pytest.raises(ValueError, match="front must be a RouterFront, got dict"):
    binned.routed_gather(x, w, b, {})
  with pytest.raises(ValueError, match="kind must be one of .*got 'gpt-oss'"):
    routing.route_logits(x @ w.T, b, top_k=K, kind="gpt-oss")
  with pytest.raises(ValueError, match=r"logits must be \[T, E\] and bias \[E\] \(E of logits\), "
                     r"got shapes \(24, 6\) and \(1,\)"):
    routing.route_logits(x @ w.T, b[:1], top_k=K)
  with pytest.raises(ValueError, match=r"top_k must be in \[1, E=6\], got 7"):
    routing.route_logits(x @ w.T, b, top_k=7)
