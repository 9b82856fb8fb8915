"""The ping-pong gmm / gmm_glu (`kernels/grouped_matmul_pingpong.py`: each compute warpgroup
owns whole [128, BN] tiles, in turn) against the cooperative Mosaic kernel: outputs
compared, then CUPTI kernel times interleaved on gpt-oss-20b-like layouts (160 tiles,
~132 used).

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/pingpong-sweep/probe.py OUT.json
"""
import sys
import numpy as np
import jax, jax.numpy as jnp
from bench.gmm_probe import Log, cupti_ms, operands
from moe_jax import _compat
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as coop
from moe_jax.kernels import grouped_matmul_pingpong as pp

ACT = (("activation", "gpt_oss_glu"), ("alpha", 1.702), ("limit", 7.0))
SMS = _compat.num_sms()
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__)


def fn(mod, op, cfg, transpose=False):
  if op == "gmm_glu":
    return jax.jit(lambda x, w, b, g, f: mod.gmm_glu(x, w, b, g, f, act=ACT, config=cfg,
                                                     num_sms=SMS))
  return jax.jit(lambda x, w, b, g, f: mod.gmm(x, w, g, transpose_rhs=transpose,
                                               out_dtype=jnp.bfloat16, config=cfg, num_sms=SMS))


def cfg(bn, stages):
  return MatmulConfig(block_n=bn, block_k=64, num_stages=stages, row_band=4, backend="mosaic")


COOP = (192, 4)
PP = [(128, 5), (192, 4), (128, 4), (256, 3)]

# 1. outputs against the cooperative kernel's
checks = [("gmm", 3, 256, 384, 8, False, 2), ("gmm", 3, 256, 384, 8, True, 2),
          ("gmm_glu", 3, 256, 384, 8, False, 2), ("gmm", 32, 2880, 5760, 160, False, 0),
          ("gmm_glu", 32, 2880, 5760, 160, False, 0), ("gmm", 32, 2880, 2880, 160, False, 0),
          ("gmm", 32, 5760, 2880, 160, True, 0)]
for op, e, k, n, tiles, tr, lead in checks:
  args = operands(e, k, n, tiles, tr, seed=3, lead_unused=lead)
  want = np.asarray(fn(coop, op, cfg(*COOP), tr)(*args), np.float32)
  for v in PP[:2]:
    got = np.asarray(fn(pp, op, cfg(*v), tr)(*args), np.float32)
    log(check=op, e=e, k=k, n=n, tiles=tiles, transpose=tr, lead_unused=lead, block_n=v[0],
        stages=v[1], equal=bool(np.array_equal(got, want)),
        max_abs_diff=float(np.nanmax(np.abs(got - want))), nan=int(np.isnan(got).sum()))

# 2. kernel times, interleaved
grid = [("gmm_glu", 2880, 5760, False), ("gmm", 2880, 2880, False), ("gmm", 2880, 5760, False),
        ("gmm", 5760, 2880, True)]
for op, k, n, tr in grid:
  args = operands(32, k, n, 160, tr, seed=5)
  used = int((np.asarray(args[3]) >= 0).sum())
  fs = {("coop", *COOP): fn(coop, op, cfg(*COOP), tr)}
  for v in PP:
    if op == "gmm_glu" and v == (256, 3):
      continue
    fs[("pingpong", *v)] = fn(pp, op, cfg(*v), tr)
  times = {v: [] for v in fs}
  for _ in range(2):
    for v, f in fs.items():
      try:
        times[v] += cupti_ms(f, args)
      except Exception as err:  # noqa: BLE001 (a config that does not compile)
        times[v] = None
        log(op=op, variant=v, error=str(err)[-600:])
  for v, ts in times.items():
    if not ts:
      continue
    ms = float(np.median(ts))
    log(op=op, k=k, n=n, transpose=tr, used_tiles=used, schedule=v[0], block_n=v[1],
        stages=v[2], ms=round(ms, 4), ms_all=[round(t, 4) for t in ts],
        tflops_executed=round(2 * used * 128 * k * n / ms / 1e9, 1))
  del args, fs
