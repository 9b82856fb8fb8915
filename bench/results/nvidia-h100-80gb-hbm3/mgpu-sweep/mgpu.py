"""Mosaic GPU gmm (kernels/grouped_matmul_mgpu.py) against the Triton gmm, on the H100.

Kernel-only A/B: host timer over n back-to-back calls after warm-up, one sync (the
protocol of gmm-sweep/bands.py). argv: OUT.json. Every row checks its output against
the Triton gmm of the same inputs (relative Frobenius error); a small case first
checks both transposes and an empty tile against float64 NumPy.
"""
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from sweep_common import Recorder, dropless_layout, rel_err, timeit

from moe_jax import _compat, kernels
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as mg


def Cfg(block_n, block_k=64, num_stages=4, row_band=None):
  return MatmulConfig(block_n=block_n, block_k=block_k, num_stages=num_stages,
                      row_band=row_band, backend="mosaic")


# The variants: argv[2] "quick" tries fewer.
record = Recorder(sys.argv[1])
QUICK = len(sys.argv) > 2 and sys.argv[2] == "quick"
STAGES = (4, 5) if QUICK else (3, 4, 5)
BANDS = (lambda tpe: (tpe,)) if QUICK else (lambda tpe: (tpe, 1, 32))


print(jax.__version__, jax.devices()[0], flush=True)

# Small exact check: 4 tiles of 128 rows (groups 0, 0, 2, none), E = 3.
rng = np.random.default_rng(0)
tg = np.array([0, 0, 2, -1], np.int32)
for transpose in (False, True):
  for bn in (64, 192):
    k, n = 256, 384
    a = rng.standard_normal((512, k)).astype(np.float32)
    w = rng.standard_normal((3, n, k) if transpose else (3, k, n)).astype(np.float32)
    a16, w16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    a64, w64 = np.asarray(a16, np.float64), np.asarray(w16, np.float64)
    want = np.zeros((512, n))
    for t, g in enumerate(tg):
      if g >= 0:
        wg = w64[g].T if transpose else w64[g]
        want[t * 128:(t + 1) * 128] = a64[t * 128:(t + 1) * 128] @ wg
    try:
      got = mg.gmm(a16, w16, jnp.asarray(tg), transpose_rhs=transpose, out_dtype=jnp.float32,
                   config=Cfg(block_n=bn, num_stages=3, row_band=2),
                   num_sms=_compat.num_sms())
      got = np.asarray(got, np.float64)
      record(case="small", transpose=transpose, block_n=bn, rel_err=rel_err(got, want),
             empty_tile_max=float(np.abs(got[384:]).max()))
    except Exception:
      traceback.print_exc()
      record(case="small", transpose=transpose, block_n=bn, error=traceback.format_exc()[-2000:])

for name, E, H, I, K, T, n in [("gpt-oss-20b", 32, 2880, 2880, 4, 4096, 20),
                                ("medium", 64, 4096, 14336, 4, 16384, 5)]:
  meta = dropless_layout(rng, T, E, K)
  R, te, tm = meta.num_rows, meta.tile_expert, meta.tile_rows
  tpe = te.shape[0] // E
  keys = jax.random.split(jax.random.key(0), 4)
  print(f"{name}: R={R} TM={tm} tiles={te.shape[0]} tiles/expert={tpe}", flush=True)
  dense = jax.jit(lambda a, b: a @ b)
  ops = [("up", H, 2 * I, False), ("down", I, H, False), ("up dx", 2 * I, H, True)]
  for op, kdim, ndim, transpose in ops:
    x = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16)
    w = jax.random.normal(keys[1], (E, ndim, kdim) if transpose else (E, kdim, ndim),
                          jnp.bfloat16) * 0.02
    useful = 2 * T * K * kdim * ndim
    wd = w[0].T if transpose else w[0]
    ms = timeit(dense, x, wd, n=n)
    record(shape=name, op=op, impl="xla dense [R,K]x[K,N]", ms=round(ms, 3),
           tflops_useful=round(useful / ms / 1e9))
    tcfg = kernels.default_matmul_config(tm, kdim, ndim, jnp.bfloat16, tiles_per_expert=tpe,
                                         interpret=True)  # the Triton default
    triton = jax.jit(lambda a, b, t: kernels.gmm(a, b, t, transpose_rhs=transpose,
                                                 implementation="pallas", config=tcfg))
    want = triton(x, w, te)
    ms = timeit(triton, x, w, te, n=n)
    record(shape=name, op=op, impl="triton default", ms=round(ms, 3),
           tflops_useful=round(useful / ms / 1e9))
    bns = [b for b in (128, 192, 256) if ndim % b == 0]
    for bn in bns:
      for stages in STAGES:
        for band in BANDS(tpe):
          c = Cfg(block_n=bn, block_k=64, num_stages=stages, row_band=band)
          f = jax.jit(lambda a, b, t, c=c: mg.gmm(a, b, t, transpose_rhs=transpose,
                                                   out_dtype=jnp.bfloat16, config=c,
                                                   num_sms=_compat.num_sms()))
          try:
            err = rel_err(f(x, w, te), want)
            ms = timeit(f, x, w, te, n=n)
            record(shape=name, op=op, impl="mgpu", block_n=bn, stages=stages, row_band=band,
                   ms=round(ms, 3), tflops_useful=round(useful / ms / 1e9),
                   rel_err_vs_triton=err)
          except Exception as e:
            msg = str(e)[-300:]
            record(shape=name, op=op, impl="mgpu", block_n=bn, stages=stages, row_band=band,
                   error=msg)
    del x, w, want
