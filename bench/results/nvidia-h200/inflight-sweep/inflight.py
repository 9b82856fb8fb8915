"""Variant 13 of bench/NOTES.md: the Mosaic GPU gmm/tgmm with one wgmma group left in
flight per ring step (`MatmulConfig.mma_in_flight=1`) against waiting for each (0).

Kernel rows: CUPTI kernel time (median of n calls) and host wall over n back-to-back
calls, on the dropless layouts of gpt-oss-20b and sonic-medium; each in_flight=1 row is
compared bit for bit with the in_flight=0 row of the same blocks. Reference rows: XLA's
dense GEMM [M, K] x [K, N] and the batched einsum over perfectly balanced bins
[E, M/E, K] x [E, K, N] (cuBLAS; the rate a grouped matmul of these shapes could reach).
Layer rows: the gpt-oss-20b dropless layer forward and forward+backward with each
setting patched into the default Mosaic configs, and xla/binned beside them.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/inflight-sweep/inflight.py OUT.json
"""
import dataclasses
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

# The helpers of the H100 sweeps (timing, errors, the routing layout, incremental JSON).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]
                       / "nvidia-h100-80gb-hbm3" / "mgpu-sweep"))
from sweep_common import Recorder, dropless_layout, rel_err, timeit  # noqa: E402

from moe_jax import _compat  # noqa: E402
from moe_jax.kernels import MatmulConfig, api  # noqa: E402
from moe_jax.kernels import grouped_matmul_mgpu as mg  # noqa: E402

record = Recorder(sys.argv[1])
print(jax.__version__, jax.devices()[0], flush=True)
SMS = _compat.num_sms()


def cupti_ms(f, *args, n):
  """Median per-call CUPTI kernel time (ms) over n calls."""
  _, times = profiler.measure(f, iterations=n)(*args)
  return float(np.median(times))


def timed(f, *args, n):
  jax.block_until_ready(f(*args))
  return dict(kernel_ms=round(cupti_ms(f, *args, n=n), 4), wall_ms=round(timeit(f, *args, n=n), 4))


def mosaic(**kw):
  return MatmulConfig(backend="mosaic", **kw)


rng = np.random.default_rng(0)
SHAPES = [("gpt-oss-20b", 32, 2880, 2880, 4, 4096, 30), ("medium", 64, 4096, 14336, 4, 16384, 4)]
GMM = {"gpt-oss-20b": [(192, 4), (192, 5), (256, 3)], "medium": [(256, 3)]}
TGMM = {"gpt-oss-20b": [(128, 256, 3), (64, 256, 4)], "medium": [(128, 256, 3)]}
for name, E, H, I, K, T, n in SHAPES:
  meta = dropless_layout(rng, T, E, K)
  R, te, tm = meta.num_rows, meta.tile_expert, meta.tile_rows
  tpe = te.shape[0] // E
  M = T * K
  keys = jax.random.split(jax.random.key(0), 2)
  print(f"{name}: R={R} TM={tm} tiles={te.shape[0]} tiles/expert={tpe}", flush=True)
  ops = [("up", H, 2 * I, False), ("down", I, H, False)]
  if name == "gpt-oss-20b":
    ops.append(("up dx", 2 * I, H, True))
  for op, kdim, ndim, transpose in ops:
    x = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16)
    w = jax.random.normal(keys[1], (E, ndim, kdim) if transpose else (E, kdim, ndim),
                          jnp.bfloat16) * 0.02
    useful = 2 * M * kdim * ndim
    tf = lambda ms: round(useful / ms / 1e9)  # noqa: E731
    if not transpose:
      dense = jax.jit(lambda a, b: a @ b)
      r = timed(dense, x[:M], w[0], n=n)
      record(shape=name, op=op, impl="xla dense [M,K]x[K,N]", **r, tflops=tf(r["kernel_ms"]))
      bins = x[:M].reshape(E, M // E, kdim)
      bmm = jax.jit(lambda a, b: jnp.einsum("eck,ekn->ecn", a, b))
      r = timed(bmm, bins, w, n=n)
      record(shape=name, op=op, impl="xla bmm [E,M/E,K]x[E,K,N]", **r, tflops=tf(r["kernel_ms"]))
      del bins
    for bn, stages in GMM[name]:
      base = None
      for in_flight in (0, 1):
        c = mosaic(block_n=bn, block_k=64, num_stages=stages, row_band=tpe,
                   mma_in_flight=in_flight)
        f = jax.jit(lambda a, b, t, c=c: mg.gmm(a, b, t, transpose_rhs=transpose,
                                                 out_dtype=jnp.bfloat16, config=c, num_sms=SMS))
        try:
          out = f(x, w, te)
          same = None if base is None else bool(jnp.array_equal(out, base))
          base = out if base is None else base
          r = timed(f, x, w, te, n=n)
          record(shape=name, op=op, impl="mgpu gmm", block_n=bn, stages=stages,
                 in_flight=in_flight, **r, tflops=tf(r["kernel_ms"]), bitwise_vs_0=same)
        except Exception as e:  # noqa: BLE001  (reported, the sweep goes on)
          record(shape=name, op=op, impl="mgpu gmm", block_n=bn, stages=stages,
                 in_flight=in_flight, error=str(e)[-400:])
      del base
    del x, w
  for op, kdim, ndim in [("up dw", H, 2 * I), ("down dw", I, H)]:
    a = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16)
    g = jax.random.normal(keys[1], (R, ndim), jnp.bfloat16)
    useful = 2 * M * kdim * ndim
    for bk, bn, stages in TGMM[name]:
      base = None
      for in_flight in (0, 1):
        c = mosaic(block_k=bk, block_n=bn, num_stages=stages, mma_in_flight=in_flight)
        f = jax.jit(lambda a, g, t, c=c: mg.tgmm(a, g, t, num_groups=E, out_dtype=jnp.bfloat16,
                                                  config=c, num_sms=SMS))
        try:
          out = f(a, g, te)
          same = None if base is None else bool(jnp.array_equal(out, base))
          base = out if base is None else base
          r = timed(f, a, g, te, n=n)
          record(shape=name, op=op, impl="mgpu tgmm", block_k=bk, block_n=bn, stages=stages,
                 in_flight=in_flight, **r, tflops=round(useful / r["kernel_ms"] / 1e9),
                 bitwise_vs_0=same)
        except Exception as e:  # noqa: BLE001
          record(shape=name, op=op, impl="mgpu tgmm", block_k=bk, block_n=bn, stages=stages,
                 in_flight=in_flight, error=str(e)[-400:])
      del base
    del a, g

# The layer, with each setting patched into the default Mosaic configs.
from bench import configs  # noqa: E402
from bench.plan import CaseSpec  # noqa: E402
from bench.runners_jax import JaxRunner  # noqa: E402
from bench.timing import Protocol  # noqa: E402

original = api._mosaic_config
cfg = configs.select("gpt-oss-20b")[0]
runner = JaxRunner(cfg, Protocol())
for row, in_flight in [("pallas/dropless", 0), ("pallas/dropless", 1), ("xla/binned", None)]:
  if in_flight is not None:
    api._mosaic_config = lambda *a, _f=in_flight, **k: (
        None if (c := original(*a, **k)) is None else dataclasses.replace(c, mma_in_flight=_f))
  for mode in ("fwd", "fwd+bwd"):
    case = CaseSpec(config="gpt-oss-20b", component="layer", mode=mode, framework="jax",
                    impl=row, variant=row.split("/")[1])
    built = runner.build(case)
    compiled, _, _ = runner.prepare(built)
    args = built.inputs
    for _ in range(3):
      jax.block_until_ready(compiled(*args[0]))
    kernel = cupti_ms(compiled, *args[0], n=20)
    walls = []
    for _ in range(10):
      jax.block_until_ready(compiled(*args[0]))
      t0 = time.perf_counter()
      for i in range(20):
        o = compiled(*args[i % len(args)])
      jax.block_until_ready(o)
      walls.append((time.perf_counter() - t0) / 20 * 1e3)
    record(shape="gpt-oss-20b", op="layer " + mode, impl=row, in_flight=in_flight,
           kernel_ms=round(kernel, 4), wall_b2b_ms=round(float(np.median(walls)), 4))
    del compiled, built
  api._mosaic_config = original
