"""Split moe-bench's wall time per call into a fixed cost per sample and a cost per call.

A moe-bench sample is `inner` back-to-back calls and one sync, and its value is the
elapsed time over `inner`. If a burst of n calls takes F + n * c, the sample reads
c + F / inner: F (the first launch after a sync, the sync itself) is spread over the
sample, c (the sustained cost of one call) is not. Per row, bursts of n = 1, 2, 4, 8,
16 calls (the protocol's: previous output released before each call), ROUNDS rounds
with the n interleaved, a least-squares line through the per-n medians gives F and c.
Beside them: the runner's own CUPTI kernel time before and after (the GPU cool, then
warm from the bursts), and the SM clock, power and clock-event reasons that
nvidia-smi sampled every 20 ms during the row's bursts. Then the row is timed as
moe-bench times it (`bench.timing.time_wall`, the default protocol), every sample kept
in order beside the nvidia-smi rows of that stretch, to see any drift within a row.

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 bench/results/nvidia-h200/timeline/burst_fit.py OUT.json
"""
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

ROWS = (("jax", "pallas/dropless", "fwd+bwd"), ("jax", "pallas/binned", "fwd+bwd"),
        ("jax", "pallas/dropless", "fwd"), ("jax", "pallas/binned", "fwd"),
        ("torch", "grouped+compile", "fwd+bwd"), ("torch", "grouped+compile", "fwd"))
NS, ROUNDS = (1, 2, 4, 8, 16), 7
QUERY = "timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active"


def smi_start():
  log = tempfile.NamedTemporaryFile("w+", suffix=".csv", delete=False)
  proc = subprocess.Popen(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits",
                           "-lms", "20"], stdout=log, stderr=subprocess.STDOUT, text=True)
  return proc, log.name


def smi_window(path, t0, t1):
  """(sm MHz, W, C, reasons) rows logged between wall-clock t0 and t1 (seconds)."""
  rows = []
  for line in open(path):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
      continue
    try:
      stamp = time.mktime(time.strptime(parts[0].split(".")[0], "%Y/%m/%d %H:%M:%S"))
      stamp += float("0." + parts[0].split(".")[1]) if "." in parts[0] else 0.0
      if t0 - 0.05 <= stamp <= t1 + 0.05:
        rows.append((float(parts[1]), float(parts[2]), float(parts[3]), parts[4]))
    except ValueError:
      continue
  return rows


def main(out_path):
  from bench.gmm_probe import framework_case
  from bench.timing import Protocol, _Runner, time_wall
  proc, smi = smi_start()
  runners, report = {}, []
  try:
    for framework, impl, mode in ROWS:
      runner, built, fn = framework_case("gpt-oss-20b", framework, impl, mode, warm=6,
                                         runners=runners)
      inputs = built.inputs
      cool, _ = runner.kernel_times(fn, built, 20)
      t0 = time.time()
      times = {n: [] for n in NS}
      bursts = _Runner(fn, inputs, runner.sync, time.perf_counter)  # the protocol's bursts
      for _ in range(ROUNDS):
        for n in NS:
          times[n].append(bursts.burst(n))
      t1 = time.time()
      warm, _ = runner.kernel_times(fn, built, 20)
      t2 = time.time()
      wall = time_wall(fn, inputs, runner.sync, Protocol())
      t3 = time.time()
      proto_smi = smi_window(smi, t2, t3)
      med = {n: float(np.median(v)) for n, v in times.items()}
      slope, fixed = np.polyfit(np.array(NS, float), np.array([med[n] for n in NS]), 1)
      smi_rows = smi_window(smi, t0, t1)
      row = dict(framework=framework, impl=impl, mode=mode, burst_ms_median=med,
                 per_call_ms=float(slope), fixed_ms=float(fixed),
                 kernel_ms_cool=float(np.median(cool)), kernel_ms_warm=float(np.median(warm)),
                 sample_reading_ms={inner: float(med[inner] / inner) for inner in NS},
                 smi=dict(samples=len(smi_rows),
                          sm_mhz=[float(np.min([r[0] for r in smi_rows] or [np.nan])),
                                  float(np.median([r[0] for r in smi_rows] or [np.nan]))],
                          watts_max=float(np.max([r[1] for r in smi_rows] or [np.nan])),
                          temp_c=float(np.max([r[2] for r in smi_rows] or [np.nan])),
                          reasons=sorted({r[3] for r in smi_rows})),
                 protocol=dict(inner=wall.inner, calibration=wall.calibration,
                               samples_ms=[round(x, 4) for x in wall.samples_ms],
                               median_ms=float(np.median(wall.samples_ms)),
                               smi=[(r[0], r[1], r[2], r[3]) for r in proto_smi]))
      print(json.dumps(dict(row, protocol=None)), flush=True)
      sm = [r[0] for r in proto_smi]
      print(f"  protocol: inner {wall.inner} median {row['protocol']['median_ms']:.3f} ms; "
            f"samples 1-5 {[round(x, 3) for x in wall.samples_ms[:5]]} "
            f"last 5 {[round(x, 3) for x in wall.samples_ms[-5:]]}; sm MHz "
            f"{sm[:3]} .. {sm[-3:]}; W max {max([r[1] for r in proto_smi] or [0])}", flush=True)
      report.append(row)
      with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
      del built, fn
  finally:
    proc.terminate()


if __name__ == "__main__":
  main(sys.argv[1])
