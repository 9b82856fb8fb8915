"""Energy per call, sustained: the gpt-oss-20b layer rows of both frameworks, a dense
bf16 matmul, and gmm_glu on a layout whose padding rows are zeros or data.

Under the board's 700 W cap the time of a sustained call follows its energy (NOTES, "The
cause: the board's 700 W power cap"). This measures the energy directly. Per case: 5
synced warm calls, then SETTLE_S of the protocol's bursts (`bench.timing._Runner`, ~20
ms each) to reach the capped steady state, then MEASURE_S of bursts with NVML's energy
counter (`bench.nvml`) read after the sync before the first and after the last: ms per
call, J per call, mean W, and the SM clock read after each burst. Every case runs twice,
in two rounds over all cases.

The counter's update step is measured first, under a queue of matmuls: its distinct
readings polled every 0.2 ms.

gmm_glu cases (the Mosaic ping-pong kernel under its default config, bench-like
synthetic layout of 143 tiles, `bench.gmm_probe.operands`; `probe.json` was taken with
the even launch band of 4, before the expert bands became the default): "zero pad" zeroes the rows past each tile's fill (as the
layouts give them), "data pad" keeps random data there and passes fill 128, so the two
do the same products on different data. Were zero rows free, the zero-padded call
would cost (rows holding data) / (all rows) of the data-padded one; what it costs above
that is the padding's energy, the most that skipping those rows could give back.

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 bench/results/nvidia-h200/energy/probe.py OUT.json
On a CPU, PROBE_SMOKE=1 runs the skeleton on small shapes with a fake counter.
PROBE_CASES (comma-separated case names) and PROBE_ROUNDS pick the cases and rounds.
"""
import os
import sys
import time

import numpy as np

SMOKE = os.environ.get("PROBE_SMOKE") == "1"
SETTLE_S, MEASURE_S = (0.2, 0.3) if SMOKE else (2.0, 3.0)
ROUNDS = int(os.environ.get("PROBE_ROUNDS", "1" if SMOKE else "2"))
# Comma-separated case names to run (default: all), e.g. for an A/B of two trees.
ONLY = [c for c in os.environ.get("PROBE_CASES", "").split(",") if c]
LAYER = (("jax", "pallas/dropless", "fwd+bwd"), ("jax", "pallas/binned", "fwd"),
         ("jax", "pallas/dropless", "fwd"), ("jax", "pallas/binned", "fwd+bwd"),
         ("torch", "grouped+compile", "fwd+bwd"), ("torch", "grouped+compile", "fwd"))


def counter_step(nvml, queue) -> dict:
  """The energy counter's distinct readings while `queue()` keeps the GPU busy."""
  out = queue()  # enqueues ~0.6 s of work without waiting
  t0, seen = time.perf_counter(), []
  while time.perf_counter() - t0 < 0.5:
    e = nvml.energy_mj()
    if not seen or e != seen[-1][1]:
      seen.append((time.perf_counter() - t0, e))
    time.sleep(0.0002)
  del out
  dt = np.diff([s[0] for s in seen]) * 1e3
  de = np.diff([s[1] for s in seen])
  return dict(changes=len(seen) - 1, step_ms_median=float(np.median(dt)) if len(dt) else None,
              step_mj_median=float(np.median(de)) if len(de) else None)


def sustained(burst, nvml, per_call_ms: float) -> dict:
  """ms and J per call over MEASURE_S after SETTLE_S of ~20 ms bursts."""
  n = max(1, round(20.0 / per_call_ms))
  end = time.perf_counter() + SETTLE_S
  while time.perf_counter() < end:
    burst(n)
  mhz, calls = [], 0
  e0, t0 = nvml.energy_mj(), time.perf_counter()
  while time.perf_counter() - t0 < MEASURE_S:
    burst(n)
    calls += n
    mhz.append(nvml.sm_mhz())
  t1, e1 = time.perf_counter(), nvml.energy_mj()
  joules = (e1 - e0) / 1e3
  return dict(inner=n, calls=calls, ms_per_call=(t1 - t0) * 1e3 / calls,
              j_per_call=joules / calls, watts=joules / (t1 - t0),
              sm_mhz_median=float(np.median(mhz)), sm_mhz_min=float(min(mhz)),
              temp_c=nvml.temperature_c())


def _bursts(fn, inputs, sync):
  """(burst, cool ms per call over 8 calls, fn's output on inputs[0]) of warmed-up `fn`."""
  from bench.timing import _Runner  # pylint: disable=import-outside-toplevel
  first = fn(*inputs[0])
  sync(first)
  r = _Runner(fn, inputs, sync, time.perf_counter)
  r.burst(2)
  return r.burst, r.burst(8) / 8, first


def layer_case(framework, impl, mode, runners):
  """`_bursts` of a gpt-oss-20b layer case as moe-bench builds it, after 5 warm calls."""
  from bench.gmm_probe import framework_case  # pylint: disable=import-outside-toplevel
  runner, built, fn = framework_case("gpt-oss-20b", framework, impl, mode, warm=5,
                                     runners=runners)
  return _bursts(fn, built.inputs, runner.sync)


def jax_case(f, args_list):
  """`_bursts` of a jitted JAX function over its rotated argument sets."""
  import jax  # pylint: disable=import-outside-toplevel
  for a in args_list:
    jax.block_until_ready(f(*a))
  return _bursts(f, args_list, jax.block_until_ready)


class _FakeNvml:
  """The counter as a clock, for the CPU smoke run."""

  def energy_mj(self):
    return int(time.perf_counter() * 5e5)

  def sm_mhz(self):
    return 1980

  def temperature_c(self):
    return 40

  def power_limit_w(self):
    return 700.0


def main(out_path):
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from bench.gmm_probe import Log, operands
  from bench.nvml import Nvml
  from moe_jax import kernels
  nvml = _FakeNvml() if SMOKE else Nvml.open()
  log = Log(out_path, power_limit_w=nvml.power_limit_w(), settle_s=SETTLE_S,
            measure_s=MEASURE_S)

  n = 256 if SMOKE else 8192
  mats = [tuple(jax.random.normal(jax.random.key(2 * r + s), (n, n), jnp.bfloat16)
                for s in (0, 1)) for r in range(2)]
  matmul = jax.jit(jnp.matmul)

  def queue():
    out = None
    for i in range(400):
      out = matmul(*mats[i % 2])
    return out
  jax.block_until_ready(queue())
  log(case="energy counter", **counter_step(nvml, queue))
  jax.block_until_ready(matmul(*mats[0]))

  e, tiles, hidden, inter = (4, 12, 128, 64) if SMOKE else (32, 143, 2880, 2880)
  x, w, b, group, fill = operands(e, hidden, 2 * inter, tiles, seed=3)
  keep = (jnp.arange(tiles * 128) % 128 < jnp.repeat(fill, 128))[:, None]
  x_zero = jnp.where(keep, x, 0).astype(x.dtype)
  full = jnp.where(group >= 0, 128, 0).astype(jnp.int32)
  glu = jax.jit(lambda x, f: kernels.gmm_glu(x, w, b, group, f, activation="gpt_oss_glu",
                                             implementation="pallas"))
  used_rows = int(jnp.sum(jnp.where(group >= 0, fill, 0)))
  cases = {
      "dense matmul 8192 bf16": (lambda: jax_case(matmul, mats), 2 * n ** 3),
      "gmm_glu zero pad": (lambda: jax_case(glu, [(x_zero, fill)]), None),
      "gmm_glu data pad": (lambda: jax_case(glu, [(x, full)]), None),
  }
  runners = {}
  for framework, impl, mode in () if SMOKE else LAYER:
    cases[f"{framework} {impl} {mode}"] = (
        lambda a=(framework, impl, mode): layer_case(*a, runners), None)
  cases = {k: v for k, v in cases.items() if not ONLY or k in ONLY}
  built = {}
  for rnd in range(ROUNDS):
    for name, (make, flops) in cases.items():
      if name not in built:
        built[name] = make()
      burst, per_call, _ = built[name]
      row = sustained(burst, nvml, per_call)
      if flops:
        row["tflops"] = flops / row["ms_per_call"] / 1e9
      log(case=name, round=rnd, cool_burst_ms_per_call=per_call, **row)
  log(case="layout", tiles=tiles, used_tiles=int(jnp.sum(group >= 0)), used_rows=used_rows)


if __name__ == "__main__":
  main(sys.argv[1])
