"""The fused gmm + GLU (`grouped_matmul_mgpu.gmm_glu`) against gmm then tile_glu, on
synthetic tile layouts (3-5 tiles per expert, random last-tile fill): the largest
difference, the error against float64 on every 7th tile, CUPTI kernel times.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/gmm-glu/probe.py OUT.json
"""
import json, sys, time
import numpy as np
import jax, jax.numpy as jnp
from jax.experimental.mosaic.gpu import profiler
from moe_jax import _compat, kernels
from moe_jax.kernels import grouped_matmul_mgpu as m

act = (("activation", "gpt_oss_glu"), ("alpha", 1.702), ("limit", 7.0))
out = {}

def layout(e, tiles, seed):
  rng = np.random.default_rng(seed)
  groups, fills = [], []
  for g in range(e):
    n = int(rng.integers(3, 6))
    for i in range(n):
      groups.append(g); fills.append(128 if i < n - 1 else int(rng.integers(1, 129)))
  groups = groups[:tiles]; fills = fills[:tiles]
  while len(groups) < tiles:
    groups.append(-1); fills.append(0)
  return jnp.asarray(groups, jnp.int32), jnp.asarray(fills, jnp.int32)

def case(name, e, k, n, tiles):
  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  x = jax.random.normal(k1, (tiles * 128, k), jnp.bfloat16)
  w = (jax.random.normal(k2, (e, k, n), jnp.float32) / np.sqrt(k)).astype(jnp.bfloat16) * 3
  b = jax.random.normal(k3, (e, n), jnp.float32).astype(jnp.bfloat16)
  groups, fill = layout(e, tiles, 1)
  cfg = kernels.default_matmul_config(128, k, n, jnp.bfloat16, tiles_per_expert=tiles // e)
  fused = jax.jit(lambda x, w, b, g, f: m.gmm_glu(x, w, b, g, f, act=act, config=cfg,
                                                   num_sms=_compat.num_sms()))
  def unfused(x, w, b, g, f):
    h = kernels.gmm(x, w, g, implementation="pallas", config=cfg)
    return kernels.tile_glu(h, b, g, f, implementation="pallas", **dict(act))
  unfused = jax.jit(unfused)
  args = (x, w, b, groups, fill)
  a = np.asarray(fused(*args).astype(jnp.float32)); u = np.asarray(unfused(*args).astype(jnp.float32))
  diff = np.abs(a - u)
  rec = dict(config=str(cfg), max_abs_diff=float(diff.max()), frac_diff=float((diff > 0).mean()),
             max_abs=float(np.abs(u).max()), nan=int(np.isnan(a).sum()))
  # float64 oracle on a few tiles
  xs = np.asarray(x.astype(jnp.float32), np.float64); ws = np.asarray(w.astype(jnp.float32), np.float64)
  bs = np.asarray(b.astype(jnp.float32), np.float64); gs = np.asarray(groups); fs = np.asarray(fill)
  errs = []
  for t in range(0, tiles, 7):
    rows = slice(t * 128, (t + 1) * 128)
    if gs[t] < 0:
      errs.append(float(np.abs(a[rows]).max())); continue
    h = xs[rows] @ ws[gs[t]] + bs[gs[t]]
    gate = np.minimum(h[:, 0::2], 7.0); up = np.clip(h[:, 1::2], -7, 7)
    ref = (up + 1) * gate / (1 + np.exp(-1.702 * gate))
    ref[fs[t]:] = 0
    errs.append(float(np.abs(a[rows] - ref).max() / max(1.0, np.abs(ref).max())))
  rec["max_rel_err_vs_f64"] = max(errs)
  for label, f in (("fused", fused), ("unfused", unfused)):
    f(*args).block_until_ready()
    _, t = profiler.measure(f, iterations=20)(*args)
    rec[label + "_ms"] = float(np.median(t))
  print(name, rec, flush=True)
  out[name] = rec

case("gpt-oss-20b", 32, 2880, 5760, 160)
case("small", 4, 256, 384, 12)
case("sonic-medium", 64, 4096, 28672, 256)
json.dump(out, open(sys.argv[1], "w"), indent=1)
