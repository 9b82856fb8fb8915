"""gmm launch bands (`MatmulConfig.row_band`) and tgmm grid order, gpt-oss-20b and medium.

Kernel-only A/B on the GPU: host timer over n back-to-back calls after warm-up, one sync.
argv: OUT.json [OLD.py], OLD.py being the kernels module before the change
(`git show ae147ed:moe_jax/kernels/grouped_matmul.py`), whose tgmm launches the group
fastest; without it the old-order tgmm rows are left out.
Checks: on gpt-oss-20b against the "xla" implementation (ragged_dot); on medium, where
ragged_dot would need 36 GB, every launch order against band 1, bitwise.
"""
import importlib.util
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax import kernels, make_dispatch
from moe_jax.kernels import MatmulConfig


def timeit(f, *args, n):
  for _ in range(3):
    jax.block_until_ready(f(*args))
  t0 = time.perf_counter()
  for _ in range(n):
    out = f(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n * 1e3


def rel_err(got, want):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


old = None
if len(sys.argv) > 2:
  spec = importlib.util.spec_from_file_location("old_grouped_matmul", sys.argv[2])
  old = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(old)

res = []


def record(**row):
  res.append(row)
  print(row, flush=True)
  json.dump(res, open(sys.argv[1], "w"), indent=1)  # every row, in case the run is cut off


for name, E, H, I, K, T, n in [("gpt-oss-20b", 32, 2880, 2880, 4, 4096, 20),
                                ("medium", 64, 4096, 14336, 4, 16384, 8)]:
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((T, E)) + np.linspace(0, 1.5, E)
  idx = np.argsort(-logits, axis=1)[:, :K].astype(np.int32)
  meta = make_dispatch(jnp.asarray(idx), E, None)
  R, te, tm = meta.num_rows, meta.tile_expert, meta.tile_rows
  tpe = te.shape[0] // E
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (R, H), jnp.bfloat16)
  w1 = jax.random.normal(keys[1], (E, H, 2 * I), jnp.bfloat16) * 0.02
  g1 = jax.random.normal(keys[2], (R, 2 * I), jnp.bfloat16)
  useful_up = 2 * T * K * H * 2 * I
  useful_down = 2 * T * K * I * H
  print(f"{name}: R={R} TM={tm} tiles={te.shape[0]} tiles/expert={tpe}", flush=True)

  def gmm(c, transpose_rhs=False):
    return jax.jit(lambda a, b, t: kernels.gmm(a, b, t, transpose_rhs=transpose_rhs,
                                               implementation="pallas", config=c))

  default_up = kernels.default_matmul_config(tm, H, 2 * I, jnp.bfloat16, tiles_per_expert=tpe)
  small = name == "gpt-oss-20b"
  want = kernels.gmm(x, w1, te, implementation="xla") if small else None
  for band in (1, 2, 4, 8, 16, None, "default", "default-again"):
    c = default_up if str(band).startswith("default") else MatmulConfig(
        block_n=256, block_k=64, num_warps=8, num_stages=4, row_band=band)
    f = gmm(c)
    if want is None:  # band 1 is the reference of the other orders
      want = f(x, w1, te)
    err = rel_err(f(x, w1, te), want) if band != "default-again" else None
    ms = timeit(f, x, w1, te, n=n)
    record(shape=name, op="gmm up", row_band=c.row_band, label=str(band), ms=round(ms, 3),
           tflops_useful=round(useful_up / ms / 1e9), rel_err_vs_xla=err)
  del want
  f = gmm(default_up, transpose_rhs=True)  # input gradient of the up projection
  ms = timeit(f, g1, w1, te, n=n)
  record(shape=name, op="gmm up dx", row_band=default_up.row_band, label="default",
         ms=round(ms, 3), tflops_useful=round(useful_up / ms / 1e9))
  tcfg = kernels.default_matmul_config(tm, H, 2 * I, jnp.bfloat16, transposed=True)
  want = kernels.tgmm(x, g1, te, num_groups=E, implementation="xla") if small else None
  new = jax.jit(lambda a, b, t: kernels.tgmm(a, b, t, num_groups=E, implementation="pallas"))
  variants = [("group slowest (new)", new)]
  if old is not None:
    variants.append(("group fastest (old)", jax.jit(lambda a, b, t: old.tgmm(
        a, b, t, num_groups=E, out_dtype=jnp.bfloat16, precision=None, config=tcfg,
        interpret=False))))
  for label, f in variants:
    if want is None:
      want = f(x, g1, te)
    err = rel_err(f(x, g1, te), want)
    ms = timeit(f, x, g1, te, n=n)
    record(shape=name, op="tgmm up dw", label=label, ms=round(ms, 3),
           tflops_useful=round(useful_up / ms / 1e9), rel_err_vs_xla=err)
  del w1, g1, want
  a = jax.random.normal(keys[3], (R, I), jnp.bfloat16)
  w2 = jax.random.normal(keys[1], (E, I, H), jnp.bfloat16) * 0.02
  default_down = kernels.default_matmul_config(tm, I, H, jnp.bfloat16, tiles_per_expert=tpe)
  for band in (1, 4, 8, 16, None, "default"):
    c = default_down if band == "default" else MatmulConfig(
        block_n=256, block_k=64, num_warps=8, num_stages=4, row_band=band)
    ms = timeit(gmm(c), a, w2, te, n=n)
    record(shape=name, op="gmm down", row_band=c.row_band, label=str(band), ms=round(ms, 3),
           tflops_useful=round(useful_down / ms / 1e9))
  del w2
  for label, f in variants:
    ms = timeit(f, a, x, te, n=n)  # weight gradient of the down projection: a.T @ dy
    record(shape=name, op="tgmm down dw", label=label, ms=round(ms, 3),
           tflops_useful=round(useful_down / ms / 1e9))
  del a, x
