"""Where a synced JAX call's wall time above its kernel time goes, on one clock.

moe-bench times a forward+backward of ~4 ms as one call then one sync (inner = 1), and
that wall time exceeds the call's kernel span by 0.6-0.8 ms. torch.profiler records,
on one timeline: the host's own ranges around the call and around the sync
(`record_function`), the CUDA driver and runtime API calls of every thread (XLA's
launches included) and the GPU's kernels. Per call (median over CALLS synced calls,
after warm-up), in µs from the call's start:
  enqueue_end     the AOT call returning;
  first_api/last_api  the first and last driver/runtime API call of any thread;
  first_kernel/last_kernel_end  the GPU span;
  sync_end        block_until_ready returning;
and the API calls by name (count, summed µs, per call).

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.6 python3 bench/results/nvidia-h200/timeline/host_timeline.py OUT.json
"""
import collections
import json
import sys

import torch
torch.zeros(1, device="cuda")  # the CUDA context, before JAX
import numpy as np  # noqa: E402
import jax  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from bench.gmm_probe import bench_case, trace_events  # noqa: E402

ROWS = [("gpt-oss-20b", "pallas/dropless", "fwd+bwd"), ("gpt-oss-20b", "pallas/binned", "fwd")]
CALLS = 8


def per_call(events):
  calls = sorted((e for e in events if e.get("name", "").startswith("moe_call_")),
                 key=lambda e: e["ts"])
  rows = []
  for c in calls:
    t0, t1 = float(c["ts"]), float(c["ts"]) + float(c["dur"])
    inside = [e for e in events if t0 <= float(e["ts"]) <= t1]
    mark = {e["name"]: e for e in inside if e.get("cat") == "user_annotation"}
    api = [e for e in inside if e.get("cat") in ("cuda_driver", "cuda_runtime")]
    kern = [e for e in inside if e.get("cat") == "kernel"]
    rel = lambda x: round(float(x) - t0, 1)  # noqa: E731
    names = collections.Counter()
    durs = collections.Counter()
    for e in api:
      names[e["name"]] += 1
      durs[e["name"]] += float(e["dur"])
    enq = mark.get("enqueue")
    sync = mark.get("sync")
    rows.append(dict(
        wall=rel(t1),
        enqueue_end=rel(float(enq["ts"]) + float(enq["dur"])) if enq else None,
        sync_end=rel(float(sync["ts"]) + float(sync["dur"])) if sync else None,
        first_api=rel(min(float(e["ts"]) for e in api)) if api else None,
        last_api=rel(max(float(e["ts"]) + float(e["dur"]) for e in api)) if api else None,
        api_threads=sorted({e.get("tid") for e in api}, key=str),
        first_kernel=rel(min(float(e["ts"]) for e in kern)) if kern else None,
        last_kernel_end=rel(max(float(e["ts"]) + float(e["dur"]) for e in kern)) if kern else None,
        kernels=len(kern), kernel_sum=round(sum(float(e["dur"]) for e in kern), 1),
        api={n: (names[n], round(durs[n], 1)) for n in sorted(names)}))
  return rows


def main(out_path):
  report = []
  for config, impl, mode in ROWS:
    compiled, args = bench_case(config, impl, mode, warm=6)
    n = len(args)
    out = None
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
      for i in range(CALLS):
        with record_function(f"moe_call_{i}"):
          out = None
          with record_function("enqueue"):
            out = compiled(*args[i % n])
          with record_function("sync"):
            jax.block_until_ready(out)
    out = None
    calls = per_call(trace_events(prof))[1:]  # the first may carry the profiler's start
    keys = ("wall", "enqueue_end", "first_api", "last_api", "first_kernel", "last_kernel_end",
            "sync_end", "kernel_sum", "kernels")
    med = {k: float(np.median([c[k] for c in calls if c[k] is not None] or [np.nan]))
           for k in keys}
    row = dict(config=config, impl=impl, mode=mode, median_us=med, calls=calls)
    print(json.dumps(dict(config=config, impl=impl, mode=mode, median_us=med,
                          api_of_first=calls[0]["api"] if calls else {},
                          threads=calls[0]["api_threads"] if calls else [])), flush=True)
    report.append(row)
    with open(out_path, "w") as f:
      json.dump(report, f, indent=1)
    del compiled, args


if __name__ == "__main__":
  main(sys.argv[1])
