"""Bias + GLU block alone, fwd and fwd+bwd, gpt-oss-20b dropless shapes: formulations A/B.

usage: python scratch/glu_micro.py OUT.json
"""
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from moe_jax import experts

R, I, E, NT = 20480, 2880, 32, 160
ALPHA, LIMIT = 1.702, 7.0


def glu_strided(v):
  gate, up = v[..., 0::2], v[..., 1::2]
  gate = jnp.minimum(gate, LIMIT)
  up = jnp.clip(up, -LIMIT, LIMIT)
  return (up + 1.0) * (gate * jax.nn.sigmoid(ALPHA * gate))


def glu_pairs(v):
  p = v.reshape(*v.shape[:-1], v.shape[-1] // 2, 2)
  gate, up = p[..., 0], p[..., 1]
  gate = jnp.minimum(gate, LIMIT)
  up = jnp.clip(up, -LIMIT, LIMIT)
  return (up + 1.0) * (gate * jax.nn.sigmoid(ALPHA * gate))


def make(glu, bias_from, barrier):
  @jax.custom_vjp
  def f(h, bias, te):
    return glu(experts._biased(h, bias, te)).astype(h.dtype).reshape(R, I)

  def fwd(h, bias, te):
    return f(h, bias, te), (h, bias, te)

  def bwd(res, g):
    h, bias, te = res
    hb = experts._biased(h, bias, te)
    _, vjp = jax.vjp(glu, hb)
    (g_hb,) = vjp(g.astype(jnp.float32).reshape(NT, -1, I))
    g_h = g_hb.reshape(h.shape).astype(h.dtype)
    if bias_from == "f32":
      sums = g_hb.sum(axis=1)
    else:
      gh = jax.lax.optimization_barrier(g_h) if barrier else g_h
      sums = gh.astype(jnp.float32).reshape(NT, -1, 2 * I).sum(axis=1)
      g_h = gh
    d_bias = experts._tiles_to_experts(sums, te, E)
    return g_h, d_bias.astype(bias.dtype), None

  f.defvjp(fwd, bwd)
  return f


VARIANTS = {
    "strided_f32sum": make(glu_strided, "f32", False),
    "strided_bf16sum": make(glu_strided, "bf16", False),
    "strided_bf16sum_barrier": make(glu_strided, "bf16", True),
    "pairs_f32sum": make(glu_pairs, "f32", False),
    "pairs_bf16sum_barrier": make(glu_pairs, "bf16", True),
}

rng = np.random.default_rng(0)
counts = rng.multinomial(16384, np.ones(E) / E)
te_list = np.concatenate([np.full(-(-c // 128), e) for e, c in enumerate(counts)])
te = jnp.asarray(np.concatenate([te_list, np.full(NT - te_list.size, -1)]).astype(np.int32))
h = jax.random.normal(jax.random.key(0), (R, 2 * I), jnp.float32).astype(jnp.bfloat16) * 3
bias = jax.random.normal(jax.random.key(1), (E, 2 * I), jnp.bfloat16)
g = jax.random.normal(jax.random.key(2), (R, I), jnp.bfloat16)
res = {}
ref = None
for name, f in VARIANTS.items():
  fwd = jax.jit(f)

  @jax.jit
  def fb(h, bias, g, f=f):
    out, vjp = jax.vjp(lambda h, b: f(h, b, te), h, bias)
    return out, *vjp(g)

  outs = fb(h, bias, g)
  if ref is None:
    ref = [np.asarray(o, np.float32) for o in outs]
  err = [float(np.max(np.abs(np.asarray(o, np.float32) - r)) / (np.max(np.abs(r)) + 1e-30))
         for o, r in zip(outs, ref)]
  row = {}
  for mode, fn, args in (("fwd", fwd, (h, bias, te)), ("fwd+bwd", fb, (h, bias, g))):
    _, per = profiler.measure(fn, aggregate=False)(*args)
    _, tot = profiler.measure(fn, iterations=20)(*args)
    row[mode] = dict(kernel_ms=float(np.median(tot)),
                     kernels=[(n[:60], round(t, 4)) for n, t in per])
  row["max_rel_err_vs_first"] = err
  res[name] = row
  print(name, {m: round(row[m]["kernel_ms"], 4) for m in ("fwd", "fwd+bwd")}, err,
        [k for k in row["fwd+bwd"]["kernels"]], flush=True)
  with open(sys.argv[1], "w") as fh:
    json.dump(res, fh, indent=1)
