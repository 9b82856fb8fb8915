"""MatmulConfig.chain_items on the Mosaic gmm / gmm_glu (one chain of pipelines per CTA,
the TMA warpgroup loading the next item during the current one's last steps and
epilogue): bit-equality with the unchained kernel, and CUPTI kernel times over ring
depths, on gpt-oss-20b-like layouts (3-5 row tiles per expert, random last-tile fill,
unused tiles last) and at K = 1440 / 2880 / 5760 (per-item fixed cost).

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/chain-sweep/probe.py OUT.json
"""
import json, sys
import numpy as np
import jax, jax.numpy as jnp
from jax.experimental.mosaic.gpu import profiler
from moe_jax import _compat
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as m

ACT = (("activation", "gpt_oss_glu"), ("alpha", 1.702), ("limit", 7.0))
SMS = _compat.num_sms()
out = dict(device=str(jax.devices()[0]), jax=jax.__version__, rows=[])


def layout(e, tiles, seed, lead_unused=0):
  rng = np.random.default_rng(seed)
  groups, fills = [-1] * lead_unused, [0] * lead_unused
  for g in range(e):
    n = int(rng.integers(3, 6))
    for i in range(n):
      groups.append(g); fills.append(128 if i < n - 1 else int(rng.integers(1, 129)))
  groups, fills = groups[:tiles], fills[:tiles]
  while len(groups) < tiles:
    groups.append(-1); fills.append(0)
  return jnp.asarray(groups, jnp.int32), jnp.asarray(fills, jnp.int32)


def operands(e, k, n, tiles, transpose=False, seed=0, lead_unused=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k1, (tiles * 128, k), jnp.bfloat16)
  shape = (e, n, k) if transpose else (e, k, n)
  w = (jax.random.normal(k2, shape, jnp.float32) / np.sqrt(k)).astype(jnp.bfloat16) * 3
  b = jax.random.normal(k3, (e, n), jnp.float32).astype(jnp.bfloat16)
  g, f = layout(e, tiles, seed + 1, lead_unused)
  return x, w, b, g, f


def fn(op, cfg, transpose=False):
  if op == "gmm_glu":
    return jax.jit(lambda x, w, b, g, f: m.gmm_glu(x, w, b, g, f, act=ACT, config=cfg, num_sms=SMS))
  return jax.jit(lambda x, w, b, g, f: m.gmm(x, w, g, transpose_rhs=transpose,
                                             out_dtype=jnp.bfloat16, config=cfg, num_sms=SMS))


def cfg(stages, chain, bn=192):
  return MatmulConfig(block_n=bn, block_k=64, num_stages=stages, row_band=4, backend="mosaic",
                      chain_items=chain)


def timed(f, args, reps=3):
  f(*args).block_until_ready()
  ts = []
  for _ in range(reps):
    _, t = profiler.measure(f, iterations=10)(*args)
    ts.append(float(np.median(t)))
  return ts


# 1. bits: chained == unchained (small and layer shapes, unused tiles first and last)
checks = [("gmm", 3, 256, 384, 8, False, 2), ("gmm", 3, 256, 384, 8, True, 2),
          ("gmm_glu", 3, 256, 384, 8, False, 2), ("gmm", 32, 2880, 5760, 160, False, 0),
          ("gmm_glu", 32, 2880, 5760, 160, False, 0), ("gmm", 32, 2880, 2880, 160, False, 0),
          ("gmm", 32, 5760, 2880, 160, True, 0)]
for op, e, k, n, tiles, tr, lead in checks:
  args = operands(e, k, n, tiles, tr, seed=3, lead_unused=lead)
  st = 3 if (k // 64) % 3 == 0 else 4
  a = np.asarray(fn(op, cfg(st, False), tr)(*args), np.float32)
  b = np.asarray(fn(op, cfg(st, True), tr)(*args), np.float32)
  rec = dict(check=op, e=e, k=k, n=n, tiles=tiles, transpose=tr, lead_unused=lead, stages=st,
             equal=bool(np.array_equal(a, b)), nan=int(np.isnan(b).sum()),
             max_abs=float(np.abs(a).max()))
  print(rec, flush=True); out["rows"].append(rec)

# 2. times
grid = [("gmm", 32, 2880, 5760, False, [(3, False), (3, True), (4, False)]),
        ("gmm_glu", 32, 2880, 5760, False, [(3, False), (3, True), (4, False)]),
        ("gmm", 32, 2880, 2880, False, [(3, False), (3, True), (4, False)]),
        ("gmm", 32, 5760, 2880, True, [(3, False), (3, True), (4, False)]),
        ("gmm", 32, 1440, 5760, False, [(3, False), (3, True), (4, False)]),
        ("gmm", 32, 5760, 5760, False, [(3, False), (3, True), (4, False)])]
for op, e, k, n, tr, variants in grid:
  args = operands(e, k, n, 160, tr, seed=5)
  used = int((np.asarray(args[3]) >= 0).sum())
  fs = {v: fn(op, cfg(*v), tr) for v in variants}
  times = {v: [] for v in variants}
  for _ in range(2):  # interleaved
    for v in variants:
      times[v] += timed(fs[v], args)
  for v in variants:
    flop = 2 * used * 128 * k * n
    rec = dict(op=op, k=k, n=n, transpose=tr, used_tiles=used, stages=v[0], chain=v[1],
               ms=float(np.median(times[v])), ms_all=times[v],
               tflops_executed=flop / np.median(times[v]) / 1e9)
    print(rec, flush=True); out["rows"].append(rec)

json.dump(out, open(sys.argv[1], "w"), indent=1)
