"""The GPU clock telemetry: nvidia-smi's lines parsed, a row's window summarised, a
sampler process logged and read back, and the worker's wiring (with a fake nvidia-smi)."""
import datetime
import json
import os
import sys
import time

import numpy as np
import pytest

from bench import cli, report, telemetry


def _line(stamp: float, mhz: float, watts: float, bits: int) -> str:
  when = datetime.datetime.fromtimestamp(stamp).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
  return f"{when}, {mhz:.0f}, {watts:.2f}, 0x{bits:016x}"


def test_parse_reads_each_field_and_refuses_what_it_cannot_read():
  t = 1_790_000_000.25
  stamp, mhz, watts, bits = telemetry.parse(_line(t, 1485, 650.5, 0x4))
  assert stamp == pytest.approx(t, abs=1e-3)
  assert (mhz, watts, bits) == (1485.0, 650.5, 4)
  assert telemetry.parse("2026/12/03 14:07:07.124, 1485, [N/A], 0x4") is None
  assert telemetry.parse("2026/12/03 14:07:07.124, 1485, 650.5") is None
  assert telemetry.parse("No devices were found") is None


def test_summarize_against_numpy():
  rng = np.random.default_rng(0)
  mhz = rng.integers(1100, 1981, 40).astype(float)
  watts = rng.uniform(300, 705, 40)
  bits = rng.choice([0x0, 0x4, 0x20, 0x80, 0x24], 40)
  got = telemetry.summarize([(i * 0.02, m, w, int(b)) for i, (m, w, b)
                             in enumerate(zip(mhz, watts, bits))])
  assert got["gpu_sm_mhz_median"] == np.median(mhz)
  assert got["gpu_sm_mhz_min"] == mhz.min()
  assert got["gpu_power_w_max"] == watts.max()
  assert got["gpu_power_capped_share"] == pytest.approx(np.isin(bits, [0x4, 0x80, 0x24]).mean())
  assert got["gpu_thermal_share"] == pytest.approx(np.isin(bits, [0x20, 0x24]).mean())
  assert got["gpu_clock_samples"] == 40
  assert telemetry.summarize([]) == {k: None for k in telemetry.KEYS}


def test_select_keeps_the_window_only():
  lines = [_line(100.0 + i, 1500, 600, 0) for i in range(10)] + ["garbage"]
  got = telemetry.select(lines, 103.0, 106.0)
  assert [round(s[0]) for s in got] == [103, 104, 105, 106]


# A stand-in for `nvidia-smi --loop-ms`: a line every 10 ms, the clock constant and the
# power-cap bit on every other line.
_FAKE_SMI = r"""
import datetime, sys, time
i = 0
while True:
  now = datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
  print(f"{now}, 1500, 650.00, 0x{4 if i % 2 else 0:016x}", flush=True)
  i += 1
  time.sleep(0.01)
"""


def test_sampler_logs_and_reads_back_a_window(tmp_path):
  assert telemetry.Sampler.start(gpu=False) is None
  sampler = telemetry.Sampler.start(gpu=False, command=[sys.executable, "-c", _FAKE_SMI],
                                    directory=str(tmp_path))
  assert os.path.dirname(sampler.path) == str(tmp_path)
  try:
    time.sleep(0.5)
    t0 = time.time()
    time.sleep(0.4)
    t1 = time.time()
    got = sampler.window(t0, t1)
  finally:
    sampler.close()
  assert not os.path.exists(sampler.path)
  assert got["gpu_clock_samples"] >= 5
  assert got["gpu_sm_mhz_median"] == 1500.0 and got["gpu_power_w_max"] == 650.0
  assert 0.2 < got["gpu_power_capped_share"] < 0.8
  assert got["gpu_thermal_share"] == 0.0


def test_clock_column_text():
  assert report._clock(dict(gpu_sm_mhz_median=1485.0, gpu_power_capped_share=0.92)) == \
      "1485 (cap 92%)"
  assert report._clock(dict(gpu_sm_mhz_median=1980.0, gpu_power_capped_share=0.0)) == "1980"
  assert report._clock({}) == "—"


def test_a_run_with_a_sampler_records_each_rows_clock(tmp_path, monkeypatch):
  windows = []

  class _Stub:
    def window(self, t0, t1):
      windows.append((t0, t1))
      return dict(telemetry.summarize([(t0, 1485.0, 700.0, 4)]))

    def close(self):
      windows.append("closed")

  monkeypatch.setattr(telemetry.Sampler, "start",
                      classmethod(lambda cls, gpu, directory: _Stub()))
  before = time.time()
  argv = ["--quick", "--configs", "tiny", "--components", "layer", "--modes", "fwd",
          "--impls", "jax:xla/binned,torch:binned", "--in-process", "--out", str(tmp_path)]
  assert cli.main(argv) == 0
  rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
  rows = [r for r in rows if r["record"] == "row" and r["status"] == "ok"]
  assert len(rows) == 2
  for r in rows:
    assert r["gpu_sm_mhz_median"] == 1485.0 and r["gpu_power_capped_share"] == 1.0
    assert r["gpu_clock_method"] == telemetry.METHOD
  spans = [w for w in windows if w != "closed"]
  assert len(spans) == 2 and windows.count("closed") == 2  # one sampler per worker
  assert all(before <= t0 < t1 <= time.time() for t0, t1 in spans)
  assert "1485 (cap 100%)" in open(tmp_path / "results.md").read()
