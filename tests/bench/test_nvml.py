"""`bench.nvml`: the ctypes readings against a fake NVML library, and no handle where
there is no library."""
import ctypes

import pytest

from bench import nvml


class _FakeLib:
  """The NVML entry points `Nvml` calls, writing fixed values through the pointers."""

  def __init__(self, energy_rc: int = 0):
    self.energy_rc = energy_rc
    self.calls = []

  def nvmlInit_v2(self):  # noqa: N802 (NVML's names)
    return 0

  def nvmlDeviceGetHandleByIndex_v2(self, index, handle):  # noqa: N802
    self.calls.append(("handle", index.value))
    return 0

  def _write(self, name, ref, value, rc=0):
    self.calls.append((name,))
    if rc == 0:
      ref._obj.value = value  # pylint: disable=protected-access
    return rc

  def nvmlDeviceGetTotalEnergyConsumption(self, handle, ref):  # noqa: N802
    return self._write("energy", ref, 123_456_789, self.energy_rc)

  def nvmlDeviceGetClockInfo(self, handle, clock, ref):  # noqa: N802
    assert clock.value == 1  # NVML_CLOCK_SM
    return self._write("clock", ref, 1485)

  def nvmlDeviceGetPowerUsage(self, handle, ref):  # noqa: N802
    return self._write("power", ref, 689_500)

  def nvmlDeviceGetEnforcedPowerLimit(self, handle, ref):  # noqa: N802
    return self._write("limit", ref, 700_000)

  def nvmlDeviceGetTemperature(self, handle, sensor, ref):  # noqa: N802
    return self._write("temp", ref, 61)


def _open(monkeypatch, lib, visible=None):
  monkeypatch.setattr(ctypes, "CDLL", lambda name: lib)
  if visible is None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  else:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
  return nvml.Nvml.open()


def test_readings_and_their_units(monkeypatch):
  handle = _open(monkeypatch, _FakeLib())
  assert handle.energy_mj() == 123_456_789
  assert handle.sm_mhz() == 1485
  assert handle.power_w() == pytest.approx(689.5)  # NVML reports mW
  assert handle.power_limit_w() == pytest.approx(700.0)
  assert handle.temperature_c() == 61


def test_the_gpu_is_the_first_visible_one(monkeypatch):
  lib = _FakeLib()
  _open(monkeypatch, lib, visible="3,1")
  assert ("handle", 3) in lib.calls
  lib = _FakeLib()
  _open(monkeypatch, lib)
  assert ("handle", 0) in lib.calls


def test_no_handle_without_the_library_or_the_energy_counter(monkeypatch):
  def missing(name):
    raise OSError(f"{name}: cannot open shared object file")
  monkeypatch.setattr(ctypes, "CDLL", missing)
  assert nvml.Nvml.open() is None
  assert _open(monkeypatch, _FakeLib(energy_rc=3)) is None  # NVML_ERROR_NOT_SUPPORTED
