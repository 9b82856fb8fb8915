"""Scratch: gmm launch order (n_major) on gpt-oss-20b and medium."""
import sys, time, json, dataclasses
import jax, jax.numpy as jnp, numpy as np
from moe_jax import kernels, make_dispatch

def timeit(f, *args, n=20):
  jax.block_until_ready(f(*args)); jax.block_until_ready(f(*args))
  t0 = time.perf_counter()
  for _ in range(n): out = f(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n * 1e3

res = []
for name, E, H, I, K, T in [("gpt-oss-20b", 32, 2880, 2880, 4, 4096), ("medium", 64, 4096, 14336, 4, 16384)]:
  rng = np.random.default_rng(0)
  idx = np.argsort(-(rng.standard_normal((T, E)) + np.linspace(0, 1.5, E)), axis=1)[:, :K].astype(np.int32)
  meta = make_dispatch(jnp.asarray(idx), E, None)
  R, te, tm = meta.num_rows, meta.tile_expert, meta.tile_rows
  x = jax.random.normal(jax.random.key(0), (R, H), jnp.bfloat16)
  w1 = jax.random.normal(jax.random.key(1), (E, H, 2 * I), jnp.bfloat16) * 0.02
  a = jax.random.normal(jax.random.key(2), (R, I), jnp.bfloat16)
  w2 = jax.random.normal(jax.random.key(3), (E, I, H), jnp.bfloat16) * 0.02
  for nm in (False, True):
    for op, args, n in (("up", (x, w1, te), 2 * I), ("down", (a, w2, te), H)):
      cfg = dataclasses.replace(kernels.default_matmul_config(tm, args[0].shape[1], n, jnp.bfloat16), n_major=nm)
      f = jax.jit(lambda p, q, t, c=cfg: kernels.gmm(p, q, t, implementation="pallas", config=c))
      ms = timeit(f, *args, n=10 if name == "medium" else 20)
      res.append(dict(shape=name, op=op, n_major=nm, ms=round(ms, 3), tflops_useful=round(2 * T * K * H * n / ms / 1e9)))
      print(res[-1], flush=True)
  del x, w1, a, w2
json.dump(res, open(sys.argv[1], "w"), indent=1)
