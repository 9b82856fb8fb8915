"""Variant 29: the ping-pong gmm_glu at 192 columns, with both halves converted to h
before the epilogue. Outputs against the cooperative kernel, then CUPTI kernel times of
the cooperative 192/4, ping-pong 128/5 and ping-pong 192/4 on the gpt-oss-20b-like
layout of pingpong-sweep/probe.py. Run it once per code version (PYTHONPATH picks the
tree) with MOSAIC_GPU_DUMP_PTXAS=1 for ptxas's register and spill report.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/glu192/probe.py OUT.json LABEL
"""
import sys
import numpy as np
import jax
from bench.gmm_probe import Log, cupti_ms, operands
from moe_jax import _compat
from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import grouped_matmul_mgpu as coop
from moe_jax.kernels import grouped_matmul_pingpong as pp

ACT = (("activation", "gpt_oss_glu"), ("alpha", 1.702), ("limit", 7.0))
SMS = _compat.num_sms()
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__, code=sys.argv[2],
          module=pp.__file__)


def fn(mod, bn, stages, schedule):
  cfg = MatmulConfig(block_n=bn, block_k=64, num_stages=stages, row_band=4, backend="mosaic",
                     schedule=schedule)
  return jax.jit(lambda x, w, b, g, f: mod.gmm_glu(x, w, b, g, f, act=ACT, config=cfg,
                                                   num_sms=SMS))


variants = {("coop", 192, 4): fn(coop, 192, 4, "cooperative"),
            ("pingpong", 128, 5): fn(pp, 128, 5, "pingpong"),
            ("pingpong", 192, 4): fn(pp, 192, 4, "pingpong")}
for e, k, n, tiles, lead in [(3, 256, 384, 8, 2), (32, 2880, 5760, 160, 0)]:
  args = operands(e, k, n, tiles, seed=3, lead_unused=lead)
  want = np.asarray(variants[("coop", 192, 4)](*args), np.float32)
  for v in list(variants)[1:]:
    got = np.asarray(variants[v](*args), np.float32)
    log(check="gmm_glu", e=e, k=k, n=n, variant=v, equal=bool(np.array_equal(got, want)),
        max_abs_diff=float(np.nanmax(np.abs(got - want))), nan=int(np.isnan(got).sum()))

args = operands(32, 2880, 5760, 160, seed=5)
used = int((np.asarray(args[3]) >= 0).sum())
times = {v: [] for v in variants}
for _ in range(2):
  for v, f in variants.items():
    times[v] += cupti_ms(f, args)
for v, ts in times.items():
  ms = float(np.median(ts))
  log(op="gmm_glu", used_tiles=used, variant=v, ms=round(ms, 4), ms_all=[round(t, 4) for t in ts],
      tflops_executed=round(2 * used * 128 * 2880 * 5760 / ms / 1e9, 1))
