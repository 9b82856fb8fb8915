"""The GPU timeline of JAX calls as moe-bench times them: where the wall time above the
kernel time goes, kernel by kernel.

torch.profiler (CUPTI activity records, which cover every kernel of the process) records
the kernels of JAX calls built and compiled as moe-bench builds them; torch only opens the
CUDA context. Per row: `calls` calls timed as the bench does (back to back, one sync at
the end), then per call the GPU span (first kernel's start to last kernel's end), the sum
of kernel durations, the idle time inside the span, the gap before each call's first
kernel, and the largest idle gaps with the kernel that follows each. Memsets and copies
count as busy time and are listed.

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.6 python3 bench/results/nvidia-h200/timeline/timeline.py OUT.json \
      [CONFIG:COMPONENT:IMPL:MODE:CALLS ...]
"""
import json
import sys
import time

import torch
torch.zeros(1, device="cuda")  # the CUDA context, before JAX
import numpy as np  # noqa: E402
import jax  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.gmm_probe import framework_case, trace_events  # noqa: E402

ROWS = [("routing-bench", "pack", "pallas/binned", "fwd", 10),
        ("gpt-oss-20b", "layer", "pallas/binned", "fwd", 2),
        ("gpt-oss-20b", "layer", "pallas/dropless", "fwd+bwd", 1)]
if len(sys.argv) > 2:  # a subset: CONFIG:COMPONENT:IMPL:MODE:CALLS ...
  ROWS = [(*a.split(":")[:4], int(a.split(":")[4])) for a in sys.argv[2:]]
REPEATS = 4


def device_events(prof):
  keep = ("kernel", "gpu_memset", "gpu_memcpy")
  ev = [e for e in trace_events(prof) if e.get("cat") in keep]
  return sorted(((float(e["ts"]), float(e["dur"]), e["cat"], e["name"]) for e in ev))


def main(out_path):
  report = []
  for config, component, impl, mode, inner in ROWS:
    runner, built, compiled = framework_case(config, "jax", impl, mode, component=component)
    args, n = built.inputs, len(built.inputs)
    out = None
    for i in range(5):
      out = None
      out = compiled(*args[i % n])
    jax.block_until_ready(out)
    per_call = len(device_events_of_one(compiled, args[0]))
    samples = []
    for rep in range(REPEATS):
      with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for i in range(inner):
          out = None
          out = compiled(*args[(rep * inner + i) % n])
        jax.block_until_ready(out)
        wall = (time.perf_counter() - t0) * 1e3 / inner
      ev = device_events(prof)
      samples.append(dict(wall_ms=wall, events=ev))
    out = None
    row = summarize(config, impl, mode, inner, per_call, samples)
    report.append(row)
    with open(out_path, "w") as f:
      json.dump(report, f, indent=1)
    del compiled, built, runner


def device_events_of_one(compiled, a):
  with profile(activities=[ProfilerActivity.CUDA]) as prof:
    jax.block_until_ready(compiled(*a))
  return device_events(prof)


def summarize(config, impl, mode, inner, per_call, samples):
  calls = []
  for s in samples:
    ev = s["events"]
    if len(ev) != per_call * inner:
      print(f"{config} {impl} {mode}: {len(ev)} events for {inner} calls of {per_call}", flush=True)
    for c in range(inner):
      e = ev[c * per_call:(c + 1) * per_call]
      if not e:
        continue
      start, end = e[0][0], max(t + d for t, d, *_ in e)
      busy = sum(d for _, d, *_ in e)
      gaps = [(e[i + 1][0] - (e[i][0] + e[i][1]), e[i + 1][3][:60]) for i in range(len(e) - 1)]
      prev_end = ev[c * per_call - 1][0] + ev[c * per_call - 1][1] if c else None
      calls.append(dict(span_us=end - start, busy_us=busy, idle_us=end - start - busy,
                        lead_gap_us=None if prev_end is None else start - prev_end,
                        top_gaps=sorted(gaps, reverse=True)[:6], wall_ms=s["wall_ms"],
                        kinds=sorted({k for _, _, k, _ in e})))
  med = lambda k: float(np.median([c[k] for c in calls if c[k] is not None] or [np.nan]))  # noqa: E731
  row = dict(config=config, impl=impl, mode=mode, inner=inner, events_per_call=per_call,
             wall_ms=med("wall_ms"), span_us=med("span_us"), busy_us=med("busy_us"),
             idle_us=med("idle_us"), lead_gap_us=med("lead_gap_us"),
             top_gaps_of_first=calls[0]["top_gaps"] if calls else [],
             kinds=calls[0]["kinds"] if calls else [])
  print(json.dumps(row), flush=True)
  return row


if __name__ == "__main__":
  main(sys.argv[1])
