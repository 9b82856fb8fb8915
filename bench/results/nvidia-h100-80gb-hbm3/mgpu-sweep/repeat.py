"""Repeatability of the Mosaic GPU gmm on sonic-medium: configs interleaved A B C A B C.

Run 2 of mgpu.py timed some configs at twice their run-1 time (mgpu2.json vs mgpu.json);
this times each config three times, interleaved, by host wall (n back-to-back calls)
and by CUPTI kernel time (jax.experimental.mosaic.gpu.profiler.measure).
argv: OUT.json
"""
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from sweep_common import Recorder, dropless_layout, timeit

from moe_jax import _compat, kernels
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as mg


record = Recorder(sys.argv[1])


def cupti(f, *args):
  _, times = profiler.measure(f, iterations=5)(*args)
  return statistics.median(times) if isinstance(times, list) else times


E, H, I, K, T = 64, 4096, 14336, 4, 16384
rng = np.random.default_rng(0)
meta = dropless_layout(rng, T, E, K)
R, te, tm = meta.num_rows, meta.tile_expert, meta.tile_rows
tpe = te.shape[0] // E
keys = jax.random.split(jax.random.key(0), 2)
configs = {
    "bn256 s3 (epi 64)": MatmulConfig(block_n=256, num_stages=3, row_band=tpe, backend="mosaic"),
    "bn256 s4 (epi 32)": MatmulConfig(block_n=256, num_stages=4, row_band=tpe, backend="mosaic"),
    "bn128 s4": MatmulConfig(block_n=128, num_stages=4, row_band=tpe, backend="mosaic"),
}
for op, kdim, ndim, transpose in [("up", H, 2 * I, False), ("down", I, H, False),
                                  ("up dx", 2 * I, H, True)]:
  x = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16)
  w = jax.random.normal(keys[1], (E, ndim, kdim) if transpose else (E, kdim, ndim),
                        jnp.bfloat16) * 0.02
  useful = 2 * T * K * kdim * ndim
  fns = {label: jax.jit(lambda a, b, t, c=c: mg.gmm(a, b, t, transpose_rhs=transpose,
                                                     out_dtype=jnp.bfloat16, config=c,
                                                     num_sms=_compat.num_sms()))
         for label, c in configs.items()}
  tcfg = kernels.default_matmul_config(tm, kdim, ndim, jnp.bfloat16, tiles_per_expert=tpe,
                                       interpret=True)
  fns["triton default"] = jax.jit(lambda a, b, t: kernels.gmm(
      a, b, t, transpose_rhs=transpose, implementation="pallas", config=tcfg))
  for rep in range(3):
    for label, f in fns.items():
      if label == "triton default" and rep:
        continue
      ms = timeit(f, x, w, te, n=5)
      kms = cupti(f, x, w, te)
      record(op=op, impl=label, rep=rep, wall_ms=round(ms, 3), kernel_ms=round(kms, 3),
             tflops_wall=round(useful / ms / 1e9))
  del x, w
