"""The GPU's SM clock and power while a row's samples run, from nvidia-smi.

Sustained, a layer that keeps the tensor cores busy can reach the board's power limit,
and the driver then lowers the SM clock (on the H200 the JAX layer rows ran at
1480-1545 MHz, torch's eager rows at the full 1980; bench/NOTES.md, "The cause: the
board's 700 W power cap"). The wall time of such a row is a capped throughput, and its
CUPTI kernel time, taken in shorter stretches, is not. So each row records what the
clock did.

A `Sampler` runs `nvidia-smi --loop-ms` for the worker's lifetime, logging to a file;
`Sampler.window(t0, t1)` reads back the lines stamped between two `time.time()` values
and `summarize` reduces them. Without a GPU or an nvidia-smi, `Sampler.start` returns
None and rows carry no clock fields.
"""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence

import numpy as np

LOOP_MS = 20
# nvidia-smi's clock-event reason bits (nvmlClocksEventReasons).
POWER_BITS = 0x4 | 0x80  # SW power cap, HW power brake
THERMAL_BITS = 0x20 | 0x40  # SW thermal slowdown, HW thermal slowdown
_REASONS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")  # new, old name
METHOD = (f"nvidia-smi every {LOOP_MS} ms during the timed samples: SM clock, power.draw "
          "(the driver's averaged reading), clock-event reasons")
KEYS = ("gpu_sm_mhz_median", "gpu_sm_mhz_min", "gpu_power_w_max", "gpu_power_capped_share",
        "gpu_thermal_share", "gpu_clock_samples")


def parse(line: str) -> tuple[float, float, float, int] | None:
  """(time.time() stamp, SM MHz, watts, reason bits) of one CSV line, or None.

  Example:
    >>> parse("2026/12/03 14:07:07.124, 1485, 650.5, 0x0000000000000004")[1:]
    (1485.0, 650.5, 4)
  """
  parts = [p.strip() for p in line.split(",")]
  if len(parts) != 4:
    return None
  try:
    stamp = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
    return stamp, float(parts[1]), float(parts[2]), int(parts[3], 16)
  except ValueError:
    return None


def summarize(samples: Sequence[tuple[float, float, float, int]]) -> dict:
  """The row's clock fields (`KEYS`) from parsed samples; None-valued without any.

  Example:
    >>> s = summarize([(0.0, 1980.0, 500.0, 0), (0.02, 1485.0, 700.0, 4)])
    >>> s["gpu_sm_mhz_min"], s["gpu_power_capped_share"]
    (1485.0, 0.5)
  """
  if not samples:
    return {k: None for k in KEYS}
  mhz = np.array([s[1] for s in samples])
  bits = [s[3] for s in samples]
  return dict(gpu_sm_mhz_median=float(np.median(mhz)), gpu_sm_mhz_min=float(mhz.min()),
              gpu_power_w_max=float(max(s[2] for s in samples)),
              gpu_power_capped_share=float(np.mean([bool(b & POWER_BITS) for b in bits])),
              gpu_thermal_share=float(np.mean([bool(b & THERMAL_BITS) for b in bits])),
              gpu_clock_samples=len(samples))


def select(lines: Iterable[str], t0: float, t1: float) -> list[tuple[float, float, float, int]]:
  """The parsed lines stamped in [t0, t1] (time.time() seconds)."""
  out = []
  for line in lines:
    s = parse(line)
    if s is not None and t0 <= s[0] <= t1:
      out.append(s)
  return out


class Sampler:
  """nvidia-smi logging the SM clock, power and clock-event reasons every LOOP_MS."""

  def __init__(self, proc: subprocess.Popen, path: str):
    self._proc, self.path = proc, path

  @classmethod
  def start(cls, gpu: bool, command: Sequence[str] | None = None,
            directory: str | None = None) -> Sampler | None:
    """A running sampler, or None without a GPU or a working nvidia-smi.

    `command` replaces the nvidia-smi command line (tests pass a fake one); it must print
    lines of `parse`'s form. The log goes to `directory` (the run's scratch directory,
    removed after the run even if the worker is killed) or the system's temp directory.
    """
    if command is None:
      if not gpu or shutil.which("nvidia-smi") is None:
        return None
      command = _nvidia_smi_command()
      if command is None:
        return None
    fd, path = tempfile.mkstemp(prefix="moe-bench-smi-", suffix=".csv", dir=directory)
    with os.fdopen(fd, "w") as log:
      proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.DEVNULL)
    return cls(proc, path)

  def window(self, t0: float, t1: float, wait_s: float = 1.0) -> dict:
    """`summarize` of the samples stamped in [t0, t1] (time.time() seconds), after
    waiting up to `wait_s` for a line stamped past t1 (the log may lag)."""
    deadline = time.time() + wait_s
    while True:
      with open(self.path) as f:
        lines = f.readlines()
      last = next((p[0] for p in map(parse, reversed(lines)) if p is not None), None)
      if (last is not None and last >= t1) or time.time() >= deadline:
        return summarize(select(lines, t0, t1))
      time.sleep(0.05)

  def close(self) -> None:
    self._proc.terminate()
    try:
      self._proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
      self._proc.kill()
    os.unlink(self.path)


def _nvidia_smi_command() -> list[str] | None:
  """The logging command for the GPU this process sees first, with whichever name of the
  reasons field this driver knows; None if nvidia-smi answers neither."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
  index = visible or "0"
  for reasons in _REASONS:
    query = f"--query-gpu=timestamp,clocks.sm,power.draw,{reasons}"
    try:
      probe = subprocess.run(["nvidia-smi", "-i", index, query, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
      return None
    if probe.returncode == 0 and parse(probe.stdout.strip().splitlines()[0] if probe.stdout
                                       else "") is not None:
      return ["nvidia-smi", "-i", index, query, "--format=csv,noheader,nounits",
              f"--loop-ms={LOOP_MS}"]
  return None
