"""Variant 30: the ping-pong gmm_glu whose column pickers read h from SMEM
(`grouped_matmul_pingpong._stage_h`), against reading it from registers, at 128 and
192 columns; a diagnostic build without the pickers (the epilogue stores h's first
columns: wrong values, timing and ptxas report only); the plain ping-pong gmm at 192.
Outputs against the cooperative kernel, CUPTI kernel ms on the gpt-oss-20b-like layout
of pingpong-sweep/probe.py. Run with MOSAIC_GPU_DUMP_PTXAS=1 for ptxas's reports, which
come in the order of the `compile` records.

It ran on an uncommitted switch, `grouped_matmul_pingpong._stage_h(block_n)`, and an
`h_smem` argument of `grouped_matmul_mgpu._glu_block`, both taken out after (bench/NOTES.md,
variant 30): it does not run on later code.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/glu192/probe_h.py OUT.json
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


def build(name, make, stage_h=False, no_pick=False):
  """Traces and compiles `make()` for every shape under the variant's patches."""
  old = pp._stage_h, coop._glu_block
  pp._stage_h = lambda bn: stage_h
  if no_pick:
    coop._glu_block = lambda plgpu, pick, bias, fill, act, h, cs, h_smem=None: h[:, cs]
  try:
    f = make()
    print(f"=== compile {name}", flush=True)
    compiled = {s: jax.jit(f).lower(*a).compile() for s, a in list(ARGS.items()) + [("t", TIMED)]}
  finally:
    pp._stage_h, coop._glu_block = old
  log(compile=name)
  return compiled


glu = lambda mod, c: (lambda x, w, b, g, f: mod.gmm_glu(x, w, b, g, f, act=ACT, config=c,
                                                        num_sms=SMS))
variants = {
    "coop 192/4": build("coop 192/4", lambda: glu(coop, cfg(192, 4, "cooperative"))),
    "pp 128/5 reg": build("pp 128/5 reg", lambda: glu(pp, cfg(128, 5))),
    "pp 128/5 smem": build("pp 128/5 smem", lambda: glu(pp, cfg(128, 5)), stage_h=True),
    "pp 192/4 reg": build("pp 192/4 reg", lambda: glu(pp, cfg(192, 4))),
    "pp 192/4 smem": build("pp 192/4 smem", lambda: glu(pp, cfg(192, 4)), stage_h=True),
    "pp 192/3 smem": build("pp 192/3 smem", lambda: glu(pp, cfg(192, 3)), stage_h=True),
    "pp 192/4 no-pick (diagnostic)": build("pp 192/4 no-pick", lambda: glu(pp, cfg(192, 4)),
                                           no_pick=True),
}
plain = build("pp gmm 192/4", lambda: (lambda x, w, b, g, f: pp.gmm(
    x, w, g, transpose_rhs=False, out_dtype=x.dtype, config=cfg(192, 4), num_sms=SMS)))

for s, args in ARGS.items():
  want = np.asarray(variants["coop 192/4"][s](*args), np.float32)
  for v, c in variants.items():
    if "diagnostic" in v or v.startswith("coop"):
      continue
    got = np.asarray(c[s](*args), np.float32)
    log(check="gmm_glu", shape=s[:4], variant=v, equal=bool(np.array_equal(got, want)),
        max_abs_diff=float(np.nanmax(np.abs(got - want))), nan=int(np.isnan(got).sum()))

used = int((np.asarray(TIMED[3]) >= 0).sum())
times = {v: [] for v in [*variants, "pp gmm 192/4 (N = 5760, no GLU)"]}
fns = {**{v: c["t"] for v, c in variants.items()}, "pp gmm 192/4 (N = 5760, no GLU)": plain["t"]}
for _ in range(2):
  for v, f in fns.items():
    times[v] += cupti_ms(f, TIMED)
for v, ts in times.items():
  ms = float(np.median(ts))
  log(op="gmm_glu", used_tiles=used, variant=v, ms=round(ms, 4), ms_all=[round(t, 4) for t in ts],
      tflops_executed=round(2 * used * 128 * 2880 * 5760 / ms / 1e9, 1))
