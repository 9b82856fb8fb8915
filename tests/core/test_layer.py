"""MoELayer / moe_forward: values vs float64, transformations, training, NNX vs Linen, errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import moe_jax
from moe_jax import MoEConfig, MoELayer, MoEParams, moe_forward
from moe_jax import linen as moe_linen
from tests.core.reference import moe_np

IMPLS = ["xla", "pallas"]


def _config(**kw):
  base = dict(num_experts=6, top_k=2, hidden_size=32, intermediate_size=16, capacity_factor=1.0,
              precision="highest")
  base.update(kw)
  return MoEConfig(**base)


def _params(cfg, seed=0):
  """Random parameters with every bias nonzero, so that no bias bug can hide."""
  keys = jax.random.split(jax.random.key(seed), 6)
  shapes = moe_jax.forward.param_shapes(cfg)
  scales = (0.3, 0.5, 0.2, 0.1, 0.2, 0.1)
  return MoEParams(*(s * jax.random.normal(k, sh) for k, sh, s in zip(keys, shapes, scales)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("overrides", [
    dict(capacity_factor=1.0), dict(capacity_factor=0.5), dict(capacity_factor=None),
    dict(router="softmax_topk", activation="swiglu", capacity_factor=1.25),
    dict(router="softmax_topk", normalize_topk=False, capacity_factor=None),
], ids=["cf1", "cf0.5", "dropless", "mixtral", "qwen-unnormalised"])
def test_forward_matches_float64(impl, overrides):
  cfg = _config(implementation=impl, **overrides)
  params = _params(cfg)
  x = jax.random.normal(jax.random.key(1), (3, 9, cfg.hidden_size))
  y, aux = jax.jit(moe_forward, static_argnums=2)(params, x, cfg)
  ref, keep, idx, w = moe_np(params, x.reshape(-1, cfg.hidden_size), top_k=cfg.top_k,
                             capacity_factor=cfg.capacity_factor, kind=cfg.router,
                             activation=cfg.activation, normalize=cfg.normalize_topk)
  assert y.shape == x.shape
  np.testing.assert_array_equal(aux["expert_indices"], idx)
  np.testing.assert_allclose(aux["expert_weights"], w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y.reshape(-1, cfg.hidden_size), ref, rtol=1e-4, atol=1e-5)
  assert float(aux["drop_fraction"]) == pytest.approx(1 - keep.mean())
  counts = np.bincount(idx.reshape(-1), minlength=cfg.num_experts)
  np.testing.assert_array_equal(aux["tokens_per_expert"], counts)
  logits = np.asarray(aux["router_logits"], np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  lb = cfg.num_experts * np.sum(counts / idx.size * probs.mean(0))
  assert float(aux["load_balancing_loss"]) == pytest.approx(lb, rel=1e-5)
  lse = np.log(np.exp(logits).sum(-1))
  assert float(aux["router_z_loss"]) == pytest.approx(np.mean(lse ** 2), rel=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("overrides", [
    dict(capacity_factor=None), dict(capacity_factor=0.5),
    dict(router="softmax_topk", activation="swiglu", capacity_factor=1.25),
], ids=["dropless", "cf0.5", "mixtral"])
def test_grad_matches_float64_finite_differences(impl, overrides):
  """Every parameter's gradient and x's (router, dispatch, experts and combine
  together) against central differences of the float64 layer, along random
  directions, at its routing (a step of 1e-6 changes no choice here)."""
  cfg = _config(implementation=impl, num_experts=4, hidden_size=16, intermediate_size=8,
                **overrides)
  params = _params(cfg)
  x = jax.random.normal(jax.random.key(6), (12, cfg.hidden_size))
  cot = np.random.default_rng(0).standard_normal((12, cfg.hidden_size))
  loss = lambda p, x: jnp.sum(moe_forward(p, x, cfg)[0] * cot)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  args = [np.asarray(a, np.float64) for a in (*params, x)]

  def f64(*a):
    y = moe_np(a[:-1], a[-1], top_k=cfg.top_k, capacity_factor=cfg.capacity_factor,
               kind=cfg.router, activation=cfg.activation, normalize=cfg.normalize_topk)[0]
    return np.sum(y * cot)

  rng, eps = np.random.default_rng(1), 1e-6
  for i, g in enumerate((*grads[0], grads[1])):
    for _ in range(2):
      v = rng.standard_normal(args[i].shape)
      step = [eps * v if j == i else 0.0 for j in range(len(args))]
      fd = (f64(*(a + d for a, d in zip(args, step)))
            - f64(*(a - d for a, d in zip(args, step)))) / (2 * eps)
      got = float(np.sum(np.asarray(g, np.float64) * v))
      assert got == pytest.approx(fd, rel=1e-4, abs=1e-4), (i, got, fd)


@pytest.mark.parametrize("impl", IMPLS)
def test_grad_matches_xla_and_vmap(impl):
  cfg = _config(implementation=impl, capacity_factor=1.0)
  params = _params(cfg)
  x = jax.random.normal(jax.random.key(2), (20, cfg.hidden_size))
  loss = lambda p, x, c: jnp.sum(moe_forward(p, x, c)[0] ** 2)
  g = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(params, x, cfg)
  g_ref = jax.grad(loss, argnums=(0, 1))(params, x, dataclasses.replace(cfg, implementation="xla"))
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(g[0].router_weight).sum()) > 0  # gradient reaches the router
  xs = jax.random.normal(jax.random.key(3), (2, 5, cfg.hidden_size))
  batched = jax.vmap(lambda xi: moe_forward(params, xi, cfg)[0])(xs)
  for i in range(2):
    np.testing.assert_allclose(batched[i], moe_forward(params, xs[i], cfg)[0], rtol=1e-6, atol=1e-6)


def test_training_loss_decreases():
  cfg = _config(implementation="pallas", capacity_factor=1.25, precision=None)
  model = MoELayer(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(4), (64, cfg.hidden_size))
  target = jnp.tanh(x @ jax.random.normal(jax.random.key(5), (cfg.hidden_size, cfg.hidden_size)))
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    def loss_fn(m):
      y, aux = m(x)
      return jnp.mean((y - target) ** 2) + 0.01 * aux["load_balancing_loss"]
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  losses = [float(step(model, opt)) for _ in range(20)]
  assert losses[-1] < 0.7 * losses[0], losses
  assert np.all(np.isfinite(losses))


def test_nnx_and_linen_identical():
  cfg = _config(capacity_factor=1.0)
  x = jax.random.normal(jax.random.key(6), (2, 7, cfg.hidden_size))
  lin = moe_linen.MoELayer(cfg)
  variables = lin.init(jax.random.key(0), x)
  params = MoEParams(*(variables["params"][n] for n in MoEParams._fields))
  nnx_layer = MoELayer(cfg, rngs=nnx.Rngs(0), params=params)
  y_lin, aux_lin = lin.apply(variables, x)
  y_nnx, aux_nnx = nnx_layer(x)
  np.testing.assert_array_equal(y_lin, y_nnx)
  np.testing.assert_array_equal(aux_lin["expert_indices"], aux_nnx["expert_indices"])
  ref, *_ = moe_np(params, x.reshape(-1, cfg.hidden_size), top_k=2, capacity_factor=1.0)
  np.testing.assert_allclose(y_nnx.reshape(-1, cfg.hidden_size), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_token_is_isolated(impl):
  cfg = _config(implementation=impl, capacity_factor=None)
  params = _params(cfg)
  x = jax.random.normal(jax.random.key(7), (10, cfg.hidden_size))
  y_clean, _ = moe_forward(params, x, cfg)
  y_nan, _ = moe_forward(params, x.at[3, 5].set(jnp.nan), cfg)
  others = np.arange(10) != 3
  np.testing.assert_array_equal(np.asarray(y_nan)[others], np.asarray(y_clean)[others])
  assert np.isnan(np.asarray(y_nan)[3]).any()


@pytest.mark.parametrize("impl,present", [("pallas", True), ("xla", False)])
def test_pallas_kernels_really_run(impl, present):
  cfg = _config(implementation=impl)
  params = _params(cfg)
  x = jnp.ones((8, cfg.hidden_size))
  fwd = str(jax.make_jaxpr(lambda p, x: moe_forward(p, x, cfg))(params, x))
  bwd = str(jax.make_jaxpr(jax.grad(lambda p, x: moe_forward(p, x, cfg)[0].sum()))(params, x))
  for name in ("moe_scatter_rows", "moe_combine_rows"):
    assert (name in fwd) == present
  for name in ("moe_scatter_rows", "moe_combine_rows", "moe_slot_dots"):  # each one's VJP
    assert (name in bwd) == present
  # Binned at this size keeps the padded layout (the grouped one would need more
  # rows: C = 9 against 16-row tiles), whose experts are XLA einsums.
  assert "moe_gmm" not in fwd


@pytest.mark.parametrize("capacity_factor", [1.0, 0.5, 2.0])
def test_binned_grouped_layout_matches_float64_and_padded(capacity_factor):
  """Binned "pallas" where the grouped layout fits in E*C rows (T=64, K=2, E=4: C = 32
  or 16, one tile per expert; C = 64, bounded by the slots, 7 tiles of 32): the layer
  runs the grouped layout (gmm over each expert's kept slots). Values against float64,
  drops against the reference's, gradients against the "xla" implementation (padded
  einsums)."""
  cfg = _config(implementation="pallas", num_experts=4, capacity_factor=capacity_factor)
  params = _params(cfg)
  x = jax.random.normal(jax.random.key(5), (64, cfg.hidden_size))
  meta = moe_jax.layer_dispatch(moe_jax.route(x, params.router_weight, params.router_bias,
                                              top_k=2)[1], cfg)
  assert meta.grouped and meta.capacity == int(capacity_factor * 32)
  assert "moe_gmm" in str(jax.make_jaxpr(lambda p, x: moe_forward(p, x, cfg))(params, x))
  y, aux = jax.jit(moe_forward, static_argnums=2)(params, x, cfg)
  ref, keep, idx, _ = moe_np(params, x, top_k=2, capacity_factor=capacity_factor)
  np.testing.assert_array_equal(aux["expert_indices"], idx)
  assert float(aux["drop_fraction"]) == pytest.approx(1 - keep.mean())
  assert keep.all() == (capacity_factor > 1)  # the two smaller capacities drop slots
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
  loss = lambda p, x, c: jnp.sum(moe_forward(p, x, c)[0] ** 2)
  g = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(params, x, cfg)
  xla = dataclasses.replace(cfg, implementation="xla")
  assert not moe_jax.layer_dispatch(jnp.asarray(idx, jnp.int32), xla).grouped
  g_ref = jax.grad(loss, argnums=(0, 1))(params, x, xla)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    # f32 sums over up to 64 rows in another order (tiles vs bins): absolute error
    # scales with the leaf's largest entries, not with each (possibly cancelled) one.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(jnp.abs(b).max())))


@pytest.mark.parametrize("impl,present", [("pallas", True), ("xla", False)])
def test_dropless_grouped_matmul_kernels_run(impl, present):
  cfg = _config(implementation=impl, capacity_factor=None)
  params = _params(cfg)
  x = jnp.ones((8, cfg.hidden_size))
  fwd = str(jax.make_jaxpr(lambda p, x: moe_forward(p, x, cfg))(params, x))
  bwd = str(jax.make_jaxpr(jax.grad(lambda p, x: moe_forward(p, x, cfg)[0].sum()))(params, x))
  assert ("moe_gmm" in fwd) == present
  assert ("moe_tgmm" in bwd) == present
  assert ("ragged_dot" in fwd) != present


def test_state_dict_round_trip_and_prefix():
  cfg = _config()
  layer = MoELayer(cfg, rngs=nnx.Rngs(3))
  sd = layer.to_state_dict(prefix="mlp.")
  assert set(sd) == {"mlp." + n for n in moe_jax.convert.STATE_DICT_NAMES}
  before = {k: v.copy() for k, v in sd.items()}
  again = MoELayer.from_state_dict(cfg, sd)
  for k in sd:
    np.testing.assert_array_equal(sd[k], before[k])  # the caller's mapping is untouched
  for a, b in zip(layer.params, again.params):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"missing: \['router.bias'\]"):
    MoELayer.from_state_dict(cfg, {k: v for k, v in sd.items() if not k.endswith("router.bias")})
  # Writable copies: an in-place edit of the state dict works and leaves the layer alone.
  name = "mlp.router.weight"
  kept = np.asarray(layer.params.router_weight).copy()
  sd[name][0, 0] += 1.0
  np.testing.assert_array_equal(np.asarray(layer.params.router_weight), kept)


class TestValidation:

  def test_input(self):
    layer = MoELayer(_config(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have last dimension H=32 \(config.hidden_size\), got shape \(4, 31\)"):
      layer(jnp.ones((4, 31)))
    with pytest.raises(ValueError, match="x must have rank >= 1"):
      layer(jnp.float32(1.0))
    with pytest.raises(ValueError, match="x must have a floating dtype .* got int32"):
      layer(jnp.ones((4, 32), jnp.int32))
    with pytest.raises(ValueError, match=r"x must hold at least one token \(T = the product of "
                       r"its leading dimensions >= 1\), got shape \(2, 0, 32\)"):
      layer(jnp.ones((2, 0, 32)))

  def test_config_and_array_types(self):
    cfg = _config()
    params = _params(cfg)
    with pytest.raises(ValueError, match="config must be a MoEConfig, got dict"):
      moe_forward(params, jnp.ones((2, 32)), dataclasses.asdict(cfg))
    with pytest.raises(ValueError, match=r"x must be an array of shape \[..., H=32\] \(a jax or "
                       r"numpy array\), got list"):
      moe_forward(params, [[1.0] * 32], cfg)
    with pytest.raises(ValueError, match=r"name must be one of \('router_weight', .*got 'foo'"):
      moe_jax.init_param(jax.random.key(0), "foo", cfg)
    with pytest.raises(ValueError, match=r"indices must be \[T, K=2\] \(config.top_k\), got "
                       r"shape \(4, 1\)"):
      moe_jax.layer_dispatch(jnp.zeros((4, 1), jnp.int32), cfg)
    with pytest.raises(ValueError, match=r"tokens_per_expert must be \[E=4\] \(logits' last "
                       r"dimension\), got shape \(3,\)"):
      moe_jax.load_balancing_loss(jnp.zeros((8, 4)), jnp.array([4, 4, 4]), 2)
    with pytest.raises(ValueError, match=r"logits must be \[T, E\], got shape \(8,\)"):
      moe_jax.load_balancing_loss(jnp.zeros((8,)), jnp.array([4, 4, 4]), 2)

  def test_params_must_be_moe_params(self):
    cfg = _config()
    params = _params(cfg)
    for bad, name in [(params._asdict(), "dict"), (list(params)[:5], "list")]:
      with pytest.raises(ValueError, match=r"params must be a MoEParams of 6 arrays \(for a "
                         r"transformers state dict use params_from_state_dict\), got " + name):
        moe_forward(bad, jnp.ones((2, 32)), cfg)

  @pytest.mark.parametrize("field,value,message", [
      ("top_k", 0, r"top_k must be in \[1, num_experts=6\], got 0"),
      ("top_k", 7, r"top_k must be in \[1, num_experts=6\], got 7"),
      ("capacity_factor", 0.0,
       r"capacity_factor must be a finite number > 0, or None for dropless, got 0.0"),
      ("capacity_factor", -1.0, r"capacity_factor must be a finite number > 0"),
      ("capacity_factor", float("inf"), r"capacity_factor must be a finite number > 0.*got inf"),
      ("capacity_factor", "1.25", r"capacity_factor must be a finite number > 0.*got '1.25'"),
      ("swiglu_alpha", "x", r"swiglu_alpha must be a finite number > 0, got 'x'"),
      ("swiglu_alpha", np.complex128(1), r"swiglu_alpha must be a finite number > 0, got "),
      ("swiglu_limit", float("nan"), r"swiglu_limit must be a finite number > 0, got nan"),
      ("normalize_topk", "no", r"normalize_topk must be a bool, got 'no'"),
      ("num_experts", 6.0, r"num_experts must be an int, got 6.0"),
      ("router", "mixtral", r"router must be one of \('gpt_oss', 'softmax_topk'\), got 'mixtral'"),
      ("activation", "relu", r"activation must be one of \('gpt_oss_glu', 'swiglu'\), got 'relu'"),
      ("implementation", "cuda", r"implementation must be one of \(None, 'xla', 'pallas'\), got 'cuda'"),
      ("dtype", jnp.int32, "dtype must be a floating dtype, got int32"),
      ("dtype", "foo", "dtype must be a floating dtype, got 'foo'"),
  ])
  def test_config(self, field, value, message):
    with pytest.raises(ValueError, match=message):
      _config(**{field: value})

  def test_numpy_ints_are_ints(self):
    # Sizes read from arrays or files arrive as NumPy ints; the config keeps Python ints.
    cfg = _config(num_experts=np.int64(6), hidden_size=np.int32(32))
    assert type(cfg.num_experts) is int and type(cfg.hidden_size) is int
    assert cfg == _config()

  def test_weight_shapes(self):
    cfg = _config()
    p = _params(cfg)._replace(down_proj=jnp.ones((6, 32, 16)), router_bias=jnp.ones(5))
    with pytest.raises(ValueError) as info:
      moe_forward(p, jnp.ones((2, 32)), cfg)
    msg = str(info.value)
    assert "router_bias must have shape (6,), got (5,)" in msg
    assert "down_proj must have shape (6, 16, 32), got (6, 32, 16)" in msg


@pytest.mark.gpu
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
@pytest.mark.parametrize("hidden,inter", [(128, 64), (192, 192)])
def test_bf16_layer_on_the_mosaic_gmm(hidden, inter, capacity_factor):
  """bf16 at TM = 128 with K, N multiples of 64: on an H100 the grouped matmuls
  (forward and input gradients) run the Mosaic GPU kernel, dropless and binned (C =
  128: the grouped layout). Forward against float64, gradients against the "xla"
  implementation (ragged_dot dropless, padded einsums binned), both in bf16.
  (H, I) = (128, 64) runs 128-column blocks (cooperative: a column half per
  warpgroup), (192, 192) runs 192-column blocks on the ping-pong schedule (a whole
  tile per warpgroup), the GLU's included."""
  from moe_jax import _compat
  assert _compat.is_hopper(), "the GPU tests of this project run on an H100/H200"
  kw = dict(num_experts=4, top_k=2, hidden_size=hidden, intermediate_size=inter,
            capacity_factor=capacity_factor,
            dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, precision=None)
  cfg = MoEConfig(implementation="pallas", **kw)
  params = MoEParams(*(p.astype(jnp.bfloat16) for p in _params(cfg)))
  x = jax.random.normal(jax.random.key(1), (256, cfg.hidden_size), jnp.bfloat16)
  jaxpr = str(jax.make_jaxpr(lambda p, x: moe_forward(p, x, cfg))(params, x))
  assert "moe_gmm_mgpu" in jaxpr or "moe_gmm_pingpong" in jaxpr
  y, aux = jax.jit(moe_forward, static_argnums=2)(params, x, cfg)
  ref, keep, idx, _ = moe_np(params, x, top_k=cfg.top_k, capacity_factor=capacity_factor,
                             kind=cfg.router, activation=cfg.activation,
                             normalize=cfg.normalize_topk)
  # Tokens whose bf16 logits picked other experts than float64 (near ties) are left out;
  # with a capacity, so are tokens whose drops differ (a near tie can shift them).
  same = np.all(np.sort(np.asarray(aux["expert_indices"]), -1) == np.sort(idx, -1), -1)
  if capacity_factor is not None:
    own_keep = np.asarray(moe_jax.layer_dispatch(aux["expert_indices"], cfg).keep)
    same &= np.all(own_keep.reshape(keep.shape) == keep, -1)
  assert same.mean() > 0.9, same.mean()
  got = np.asarray(y, np.float64)[same]
  # bf16 activations between the stages: a few 2^-8 roundings, relative to the norm.
  rel = np.linalg.norm(got - ref[same]) / np.linalg.norm(ref[same])
  assert rel < 2e-2, rel

  def loss(p, x, c):
    return jnp.sum(moe_forward(p, x, c)[0].astype(jnp.float32) ** 2)
  xla = MoEConfig(implementation="xla", **kw)
  got = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(params, x, cfg)
  want = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(params, x, xla)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    # both bf16 end to end: the two differ by bf16 roundings in different places
    assert np.linalg.norm(g - w) <= 3e-2 * np.linalg.norm(w), np.linalg.norm(g - w) / np.linalg.norm(w)


def test_from_safetensors_rejects_other_files(tmp_path):
  # A JSON sidecar passed by mistake reads as a header of terabytes: a clear error, not
  # a MemoryError; a header that is not JSON too.
  sidecar = tmp_path / "w.safetensors.json"
  sidecar.write_text('{"config": {"top_k": 2}}')
  with pytest.raises(ValueError, match=r"w.safetensors.json' is not a safetensors file: its "
                     r"first 8 bytes give a header of \d+ bytes, but the file holds 24 bytes"):
    MoELayer.from_safetensors(sidecar)
  garbled = tmp_path / "g.safetensors"
  garbled.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{}")
  with pytest.raises(ValueError, match=r"g.safetensors' is not a safetensors file: its header "
                     r"is not JSON"):
    MoELayer.from_safetensors(garbled)


def test_from_safetensors_names_the_sidecar_when_it_disagrees(tmp_path):
  import json

  from moe_torch_ref import weights as W
  cfg = W.WeightConfig(num_experts=4, top_k=2, hidden_size=8, intermediate_size=4,
                       dtype="float32")
  path = tmp_path / "w.safetensors"
  W.save(path, W.generate(cfg, "nonzero-bias"), cfg)
  sidecar = tmp_path / "w.safetensors.json"
  meta = json.loads(sidecar.read_text())
  assert meta["config"]["hidden_size"] == 8
  meta["config"]["hidden_size"] = 16
  sidecar.write_text(json.dumps(meta))
  with pytest.raises(ValueError, match=r"the sidecar '.*w.safetensors.json' disagrees with the "
                     r"tensors of '.*w.safetensors': hidden_size=16 where the tensors give 8$"):
    MoELayer.from_safetensors(path)
  assert MoELayer.from_safetensors(path, hidden_size=8).config.hidden_size == 8  # overridden
  # A wrong override is the caller's: the error does not blame the sidecar.
  with pytest.raises(ValueError, match=r"bad MoE parameters") as err:
    MoELayer.from_safetensors(path, hidden_size=8, intermediate_size=5)
  assert "sidecar" not in str(err.value)
