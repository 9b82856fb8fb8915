"""MatmulConfig.cluster_n on the Mosaic gmm / gmm_glu: two CTAs of a cluster take adjacent
column blocks of one row tile and the lhs tile is TMA-multicast to both (each CTA loads
half of it). Bit-equality with cluster_n = 1, CUPTI kernel times on gpt-oss-20b-like
layouts (as chain-sweep), and the layer's kernel time with cluster_n = 2 patched into
the default configs of the non-transposed gmm calls.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/cluster-sweep/probe.py OUT.json
With a second argument `ncu`, only runs gmm_glu at cluster_n 1 then 2, twice each, for
`ncu --clock-control none -k regex:moe_gmm ...`.
"""
import dataclasses, json, sys, time
import numpy as np
import jax, jax.numpy as jnp
from jax.experimental.mosaic.gpu import profiler
from moe_jax import _compat
from moe_jax.kernels import MatmulConfig, api
from moe_jax.kernels import grouped_matmul_mgpu as m

ACT = (("activation", "gpt_oss_glu"), ("alpha", 1.702), ("limit", 7.0))
SMS = _compat.num_sms()
out = dict(device=str(jax.devices()[0]), jax=jax.__version__, rows=[])


def record(**r):
  print(r, flush=True)
  out["rows"].append(r)
  json.dump(out, open(sys.argv[1], "w"), indent=1)


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


def cfg(cluster, bn=192, stages=4):
  return MatmulConfig(block_n=bn, block_k=64, num_stages=stages, row_band=4, backend="mosaic",
                      cluster_n=cluster)


def timed(f, args, reps=3):
  f(*args).block_until_ready()
  ts = []
  for _ in range(reps):
    _, t = profiler.measure(f, iterations=10)(*args)
    ts.append(float(np.median(t)))
  return ts


if sys.argv[2:] == ["ncu"]:
  args = operands(32, 2880, 5760, 160, seed=5)
  for c in (1, 2):
    f = fn("gmm_glu", cfg(c))
    for _ in range(2):
      f(*args).block_until_ready()
  sys.exit(0)

# 1. bits: cluster 2 == cluster 1 (odd and even column-block counts, unused tiles first/last)
checks = [("gmm", 3, 256, 384, 8, False, 2, 192), ("gmm", 3, 256, 384, 8, True, 2, 128),
          ("gmm_glu", 3, 256, 384, 8, False, 2, 192), ("gmm", 32, 2880, 5760, 160, False, 0, 192),
          ("gmm_glu", 32, 2880, 5760, 160, False, 0, 192), ("gmm", 32, 2880, 2880, 160, False, 0, 192),
          ("gmm", 32, 5760, 2880, 160, True, 0, 192)]
for op, e, k, n, tiles, tr, lead, bn in checks:
  args = operands(e, k, n, tiles, tr, seed=3, lead_unused=lead)
  a = np.asarray(fn(op, cfg(1, bn), tr)(*args), np.float32)
  b = np.asarray(fn(op, cfg(2, bn), tr)(*args), np.float32)
  record(check=op, e=e, k=k, n=n, tiles=tiles, transpose=tr, lead_unused=lead, block_n=bn,
         equal=bool(np.array_equal(a, b)), nan=int(np.isnan(b).sum()),
         max_abs=float(np.abs(a).max()))

# 2. kernel times, interleaved
grid = [("gmm", 2880, 5760, False, [(1, 192, 4), (2, 192, 4), (2, 256, 3)]),
        ("gmm_glu", 2880, 5760, False, [(1, 192, 4), (2, 192, 4)]),
        ("gmm", 2880, 2880, False, [(1, 192, 4), (2, 192, 4)]),
        ("gmm", 5760, 2880, True, [(1, 192, 4), (2, 192, 4)])]
for op, k, n, tr, variants in grid:
  variants = list(dict.fromkeys(variants))
  args = operands(32, k, n, 160, tr, seed=5)
  used = int((np.asarray(args[3]) >= 0).sum())
  fs = {v: fn(op, cfg(*v), tr) for v in variants}
  times = {v: [] for v in variants}
  for _ in range(2):
    for v in variants:
      times[v] += timed(fs[v], args)
  for v in variants:
    flop = 2 * used * 128 * k * n
    ms = float(np.median(times[v]))
    record(op=op, k=k, n=n, transpose=tr, used_tiles=used, cluster=v[0], block_n=v[1],
           stages=v[2], ms=round(ms, 4), ms_all=[round(t, 4) for t in times[v]],
           tflops_executed=round(flop / ms / 1e9, 1))
  del args, fs

# 3. the layer, cluster_n = 2 patched into the non-transposed Mosaic gmm configs
from bench import configs  # noqa: E402
from bench.plan import CaseSpec  # noqa: E402
from bench.runners_jax import JaxRunner  # noqa: E402
from bench.timing import Protocol  # noqa: E402

original = api._mosaic_config


def patched(*a, **k):
  c = original(*a, **k)
  return c if c is None or k.get("transposed") else dataclasses.replace(c, cluster_n=2)


cfgs = {c.name: c for c in configs.select("gpt-oss-20b")}
runner = JaxRunner(cfgs["gpt-oss-20b"], Protocol())
for rep in range(2):
  for row in ("pallas/binned", "pallas/dropless"):
    for cluster in (1, 2):
      api._mosaic_config = patched if cluster == 2 else original
      for mode in ("fwd", "fwd+bwd"):
        case = CaseSpec(config="gpt-oss-20b", component="layer", mode=mode, framework="jax",
                        impl=row, variant=row.split("/")[1])
        built = runner.build(case)
        compiled, _, _ = runner.prepare(built)
        args = built.inputs
        for _ in range(3):
          jax.block_until_ready(compiled(*args[0]))
        _, t = profiler.measure(compiled, iterations=20)(*args[0])
        walls = []
        for _ in range(10):
          jax.block_until_ready(compiled(*args[0]))
          t0 = time.perf_counter()
          for i in range(20):
            o = compiled(*args[i % len(args)])
          jax.block_until_ready(o)
          walls.append((time.perf_counter() - t0) / 20 * 1e3)
        record(shape="gpt-oss-20b", op="layer " + mode, impl=row, cluster=cluster, rep=rep,
               kernel_ms=round(float(np.median(t)), 4),
               wall_b2b_ms=round(float(np.median(walls)), 4))
        del compiled, built
      api._mosaic_config = original
