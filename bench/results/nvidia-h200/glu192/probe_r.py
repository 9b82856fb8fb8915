"""Variant 31: the ping-pong kernels with the TMA warpgroup at 24 registers and the
compute warpgroups at 240 (`grouped_matmul_pingpong._MEMORY_REGISTERS`), against 40 /
232. gmm_glu at 128/5 and 192/4, the plain gmm at 192/4; outputs against the
cooperative kernel, CUPTI kernel ms on the gpt-oss-20b-like layout of
pingpong-sweep/probe.py. Run with MOSAIC_GPU_DUMP_PTXAS=1 for ptxas's reports (in the
order of the "=== compile" lines).

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/glu192/probe_r.py OUT.json
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
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__)
SHAPES = [(3, 256, 384, 8, 2), (32, 2880, 5760, 160, 0)]
ARGS = {s: operands(*s[:4], seed=3, lead_unused=s[4]) for s in SHAPES}
TIMED = operands(32, 2880, 5760, 160, seed=5)


def cfg(bn, stages, schedule="pingpong"):
  return MatmulConfig(block_n=bn, block_k=64, num_stages=stages, row_band=4, backend="mosaic",
                      schedule=schedule)


def build(name, make, registers=(24, 240)):
  """Traces and compiles `make()` for every shape with the ping-pong register split."""
  old = pp._MEMORY_REGISTERS, pp._COMPUTE_REGISTERS
  pp._MEMORY_REGISTERS, pp._COMPUTE_REGISTERS = registers
  try:
    f = make()
    print(f"=== compile {name}", flush=True)
    compiled = {s: jax.jit(f).lower(*a).compile() for s, a in list(ARGS.items()) + [("t", TIMED)]}
  finally:
    pp._MEMORY_REGISTERS, pp._COMPUTE_REGISTERS = old
  log(compile=name)
  return compiled


glu = lambda mod, c: (lambda x, w, b, g, f: mod.gmm_glu(x, w, b, g, f, act=ACT, config=c,
                                                        num_sms=SMS))
plain = lambda mod, c: (lambda x, w, b, g, f: mod.gmm(
    x, w, g, transpose_rhs=False, out_dtype=x.dtype, config=c, num_sms=SMS))
variants = {
    "glu coop 192/4": build("glu coop 192/4", lambda: glu(coop, cfg(192, 4, "cooperative"))),
    "glu pp 128/5 40/232": build("glu pp 128/5 40/232", lambda: glu(pp, cfg(128, 5)), (40, 232)),
    "glu pp 128/5 24/240": build("glu pp 128/5 24/240", lambda: glu(pp, cfg(128, 5))),
    "glu pp 192/4 24/240": build("glu pp 192/4 24/240", lambda: glu(pp, cfg(192, 4))),
    "gmm pp 192/4 40/232": build("gmm pp 192/4 40/232", lambda: plain(pp, cfg(192, 4)), (40, 232)),
    "gmm pp 192/4 24/240": build("gmm pp 192/4 24/240", lambda: plain(pp, cfg(192, 4))),
}
gmm_want = {s: np.asarray(jax.jit(plain(coop, cfg(192, 4, "cooperative")))(*a), np.float32)
            for s, a in ARGS.items()}
for s, args in ARGS.items():
  glu_want = np.asarray(variants["glu coop 192/4"][s](*args), np.float32)
  for v, c in variants.items():
    if "coop" in v:
      continue
    want = glu_want if v.startswith("glu") else gmm_want[s]
    got = np.asarray(c[s](*args), np.float32)
    log(check=v, shape=s[:4], equal=bool(np.array_equal(got, want)),
        max_abs_diff=float(np.nanmax(np.abs(got - want))), nan=int(np.isnan(got).sum()))

used = int((np.asarray(TIMED[3]) >= 0).sum())
times = {v: [] for v in variants}
for _ in range(2):
  for v, c in variants.items():
    times[v] += cupti_ms(c["t"], TIMED)
for v, ts in times.items():
  ms = float(np.median(ts))
  log(op=v, used_tiles=used, ms=round(ms, 4), ms_all=[round(t, 4) for t in ts],
      tflops_executed=round(2 * used * 128 * 2880 * 5760 / ms / 1e9, 1))
