"""Every gap of whole back-to-back bursts, host ranges and GPU on one clock.

The per-call medians of `timeline.py` showed no GPU idle time inside or between the
calls of a burst, yet the burst's wall time ran ~0.5 ms per call above its kernels.
Here torch.profiler records, for each burst of N back-to-back calls and one sync (the
moe-bench protocol, the previous output released before each call): the host's range
of each call's enqueue and of the sync (`record_function`), and every device event
(kernels, memsets, copies) of every call. Device events are split into calls by count
(one profiled call gives the count). Per burst, in µs from the burst's start:
  lead       to the first call's first device event;
  spans      each call's first-event start to last-event end;
  gaps       each call's first event after the previous call's last;
  tail       the last call's last event to the sync's return;
  enqueue    each call's host range; sync: the sync's host range;
so that wall = lead + sum(spans) + sum(gaps) + tail, every term measured.
A burst is also timed unprofiled (perf_counter), to see what the profiler adds. (No
CUPTI kernel timer here: it cannot subscribe beside torch.profiler.)

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 bench/results/nvidia-h200/timeline/burst_timeline.py \
      OUT.json [FRAMEWORK:IMPL:MODE:N ...]
"""
import json
import sys
import time

import torch
torch.zeros(1, device="cuda")  # the CUDA context, before JAX
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from bench.gmm_probe import trace_events  # noqa: E402

ROWS = [("jax", "pallas/dropless", "fwd+bwd", 4), ("jax", "pallas/dropless", "fwd+bwd", 12),
        ("jax", "pallas/binned", "fwd", 16), ("torch", "grouped+compile", "fwd+bwd", 3),
        ("torch", "grouped+compile", "fwd+bwd", 12)]
if len(sys.argv) > 2:
  ROWS = [(*a.split(":")[:3], int(a.split(":")[3])) for a in sys.argv[2:]]
BURSTS = 4
DEVICE = ("kernel", "gpu_memset", "gpu_memcpy")


def events(prof):
  ev = trace_events(prof)
  dev = sorted((float(e["ts"]), float(e["dur"]), e["name"][:50]) for e in ev
               if e.get("cat") in DEVICE)
  host = sorted((float(e["ts"]), float(e["dur"]), e["name"]) for e in ev
                if e.get("cat") == "user_annotation")
  return dev, host


def burst(fn, inputs, sync, n, k0):
  out = None
  for i in range(n):
    with record_function(f"enqueue_{i}"):
      out = None
      out = fn(*inputs[(k0 + i) % len(inputs)])
  with record_function("sync"):
    sync(out)


def analyse(dev, host, n, per_call):
  t0 = min(t for t, _, name in host if name.startswith("enqueue_"))
  rel = lambda t: round(t - t0, 1)  # noqa: E731
  enq = [(rel(t), rel(t + d)) for t, d, name in host if name.startswith("enqueue_")]
  sync = [(rel(t), rel(t + d)) for t, d, name in host if name == "sync"][0]
  if len(dev) != n * per_call:
    print(f"  {len(dev)} device events for {n} calls of {per_call}", flush=True)
  calls = [dev[c * per_call:(c + 1) * per_call] for c in range(n)]
  spans, gaps, busy, worst = [], [], [], []
  for c, e in enumerate(calls):
    start, end = e[0][0], max(t + d for t, d, _ in e)
    spans.append(round(end - start, 1))
    busy.append(round(sum(d for _, d, _ in e), 1))
    if c:
      prev = max(t + d for t, d, _ in calls[c - 1])
      gaps.append(round(start - prev, 1))
    inner = [(round(e[i + 1][0] - max(t + d for t, d, _ in e[:i + 1]), 1), e[i + 1][2])
             for i in range(len(e) - 1)]
    worst.append(max(inner))
  lead = rel(calls[0][0][0])
  last = max(t + d for t, d, _ in calls[-1])
  tail = round(sync[1] - rel(last), 1)
  return dict(wall_us=sync[1], lead_us=lead, spans_us=spans, busy_us=busy, gaps_us=gaps,
              tail_us=tail, enqueue_us=enq, sync_us=sync, worst_inner_gap=worst,
              first_kernels=[(rel(t), round(d, 1), name) for t, d, name in calls[0][:3]])


def main(out_path):
  from bench.gmm_probe import framework_case
  runners, report = {}, []
  for framework, impl, mode, n in ROWS:
    runner, built, fn = framework_case("gpt-oss-20b", framework, impl, mode, warm=6,
                                       runners=runners)
    inputs = built.inputs
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
      runner.sync(fn(*inputs[0]))
    per_call = len(events(prof)[0])
    plain = []
    for b in range(BURSTS):
      t = time.perf_counter()
      out = None
      for i in range(n):
        out = None
        out = fn(*inputs[(b * n + i) % len(inputs)])
      runner.sync(out)
      out = None
      plain.append(round((time.perf_counter() - t) * 1e6, 1))
    bursts = []
    for b in range(BURSTS):
      with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        burst(fn, inputs, runner.sync, n, b * n)
      bursts.append(analyse(*events(prof), n, per_call))
    row = dict(framework=framework, impl=impl, mode=mode, n=n, per_call_events=per_call,
               unprofiled_burst_us=plain, bursts=bursts)
    print(json.dumps(dict(row, bursts=None)), flush=True)
    for s in bursts:
      print("  wall {wall_us} = lead {lead_us} + spans {s} + gaps {g} + tail {tail_us};"
            " busy {b}".format(s=round(sum(s["spans_us"]), 1), g=round(sum(s["gaps_us"]), 1),
                               b=round(sum(s["busy_us"]), 1), **s), flush=True)
      print("    spans", s["spans_us"], "gaps", s["gaps_us"], flush=True)
      print("    enqueue", s["enqueue_us"], "sync", s["sync_us"], flush=True)
      print("    worst inner gap per call", s["worst_inner_gap"], flush=True)
    report.append(row)
    with open(out_path, "w") as f:
      json.dump(report, f, indent=1)
    del built, fn


if __name__ == "__main__":
  main(sys.argv[1])
