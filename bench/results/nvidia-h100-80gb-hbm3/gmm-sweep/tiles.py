"""Scratch: gpt-oss-20b gmm/tgmm, TM 128 vs 64, the new default configs and two variants."""
import sys, time, json
import jax, jax.numpy as jnp, numpy as np
from moe_jax import kernels, make_dispatch
from moe_jax.kernels import MatmulConfig

def timeit(f, *args, n=20):
  jax.block_until_ready(f(*args))
  for _ in range(2): jax.block_until_ready(f(*args))
  t0 = time.perf_counter()
  for _ in range(n): out = f(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n * 1e3

E, H, I, K, T = 32, 2880, 2880, 4, 4096
rng = np.random.default_rng(0)
logits = rng.standard_normal((T, E)) + np.linspace(0, 1.5, E)
idx = np.argsort(-logits, axis=1)[:, :K].astype(np.int32)
res = []
for tm in (128, 64):
  meta = make_dispatch(jnp.asarray(idx), E, None, tile_rows=tm)
  R, te = meta.num_rows, meta.tile_expert
  x = jax.random.normal(jax.random.key(0), (R, H), jnp.bfloat16)
  w1 = jax.random.normal(jax.random.key(1), (E, H, 2 * I), jnp.bfloat16) * 0.02
  g = jax.random.normal(jax.random.key(3), (R, 2 * I), jnp.bfloat16)
  useful = 2 * T * K * H * 2 * I
  for cfg in [None, MatmulConfig(block_n=256, block_k=64, num_warps=8, num_stages=3),
              MatmulConfig(block_n=256, block_k=32, num_warps=8, num_stages=5)]:
    for op in ("gmm", "gmmT", "tgmm"):
      try:
        if op == "gmm":
          f = jax.jit(lambda a, b, te, c=cfg: kernels.gmm(a, b, te, implementation="pallas", config=c)); args = (x, w1, te)
        elif op == "gmmT":
          f = jax.jit(lambda a, b, te, c=cfg: kernels.gmm(a, b, te, transpose_rhs=True, implementation="pallas", config=c)); args = (g, w1, te)
        else:
          if cfg is not None and cfg.block_n == 256: continue
          f = jax.jit(lambda a, b, te, c=cfg: kernels.tgmm(a, b, te, num_groups=E, implementation="pallas", config=c)); args = (x, g, te)
        ms = timeit(f, *args)
        res.append(dict(op=op, tm=tm, cfg=str(cfg), ms=round(ms, 3), tflops_useful=round(useful / ms / 1e9)))
      except Exception as e:
        res.append(dict(op=op, tm=tm, cfg=str(cfg), error=repr(e)[:200]))
      print(res[-1], flush=True)
json.dump(res, open(sys.argv[1], "w"), indent=1)
