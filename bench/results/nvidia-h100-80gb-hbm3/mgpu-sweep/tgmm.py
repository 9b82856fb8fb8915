"""Mosaic GPU tgmm (weight gradients) against the Triton tgmm, and the Mosaic gmm with
256-column blocks running past N's edge (N = 2880, 5760) against 192, on the H100.

Kernel-only A/B, host wall over n back-to-back calls after warm-up (as mgpu.py). Every
Mosaic row checks its output against the Triton kernel of the same inputs (relative
Frobenius error; the two sum in different orders). argv: OUT.json [SHAPE]
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from sweep_common import Recorder, dropless_layout, rel_err, timeit

from moe_jax import _compat, kernels
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as mg


record = Recorder(sys.argv[1])


def mosaic(**kw):
  return MatmulConfig(backend="mosaic", **kw)


TGMM_VARIANTS = [dict(block_k=128, block_n=256, num_stages=3),
                 dict(block_k=64, block_n=256, num_stages=4),
                 dict(block_k=128, block_n=128, num_stages=4),
                 dict(block_k=64, block_n=128, num_stages=4)]
rng = np.random.default_rng(0)
SHAPES = [("gpt-oss-20b", 32, 2880, 2880, 4, 4096, 20), ("medium", 64, 4096, 14336, 4, 16384, 4)]
if len(sys.argv) > 2:  # argv[2]: one shape's name
  SHAPES = [s for s in SHAPES if s[0] == sys.argv[2]]
for name, E, H, I, K, T, n in SHAPES:
  meta = dropless_layout(rng, T, E, K)
  R, te, tm = meta.num_rows, meta.tile_expert, meta.tile_rows
  tpe = te.shape[0] // E
  keys = jax.random.split(jax.random.key(0), 2)
  print(f"{name}: R={R} TM={tm} tiles={te.shape[0]}", flush=True)
  for op, kdim, ndim in [("up dw", H, 2 * I), ("down dw", I, H)]:
    a = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16)
    g = jax.random.normal(keys[1], (R, ndim), jnp.bfloat16)
    useful = 2 * T * K * kdim * ndim
    tcfg = kernels.default_matmul_config(tm, kdim, ndim, jnp.bfloat16, transposed=True,
                                         interpret=True)
    triton = jax.jit(lambda a, g, t: kernels.tgmm(a, g, t, num_groups=E, implementation="pallas",
                                                  config=tcfg))
    want = triton(a, g, te)
    ms = timeit(triton, a, g, te, n=n)
    record(shape=name, op=op, impl="triton default", ms=round(ms, 3),
           tflops_useful=round(useful / ms / 1e9))
    for v in TGMM_VARIANTS:
      c = mosaic(**v)
      f = jax.jit(lambda a, g, t, c=c: mg.tgmm(a, g, t, num_groups=E, out_dtype=jnp.bfloat16,
                                                config=c, num_sms=_compat.num_sms()))
      try:
        err = rel_err(f(a, g, te), want, groups=4)
        ms = timeit(f, a, g, te, n=n)
        record(shape=name, op=op, impl="mgpu", **v, ms=round(ms, 3),
               tflops_useful=round(useful / ms / 1e9), rel_err_vs_triton=err)
      except Exception as e:  # noqa: BLE001  (shared memory overflows are reported)
        record(shape=name, op=op, impl="mgpu", **v, error=str(e)[-300:])
    del a, g, want
  if name != "gpt-oss-20b":
    continue
  for op, kdim, ndim, transpose in [("up", H, 2 * I, False), ("down", I, H, False),
                                    ("up dx", 2 * I, H, True)]:
    x = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16)
    w = jax.random.normal(keys[1], (E, ndim, kdim) if transpose else (E, kdim, ndim),
                          jnp.bfloat16) * 0.02
    useful = 2 * T * K * kdim * ndim
    want = None
    for bn, stages in [(192, 4), (256, 3), (192, 5)]:
      c = mosaic(block_n=bn, block_k=64, num_stages=stages, row_band=tpe)
      f = jax.jit(lambda a, b, t, c=c: mg.gmm(a, b, t, transpose_rhs=transpose,
                                               out_dtype=jnp.bfloat16, config=c,
                                               num_sms=_compat.num_sms()))
      out = f(x, w, te)
      want = out if want is None else want
      ms = timeit(f, x, w, te, n=n)
      record(shape=name, op=op, impl="mgpu gmm", block_n=bn, stages=stages, ms=round(ms, 3),
             tflops_useful=round(useful / ms / 1e9),
             rel_err_vs_bn192=rel_err(out, want))
    del x, w, want
