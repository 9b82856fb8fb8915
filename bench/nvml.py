"""The GPU's energy counter, clock and power limit, read from NVML through ctypes.

No Python package is needed: the driver ships `libnvidia-ml.so.1`. `Nvml.open()` returns
None where there is no such library or no GPU (the CPU machine, CI), so callers record
nothing there.

The energy counter (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) counts the
board's millijoules since the driver loaded; two readings around a stretch of calls give
the energy of that stretch, and over the calls in it, joules per call.
"""
from __future__ import annotations

import ctypes
import os

_CLOCK_SM = 1  # nvmlClockType_t NVML_CLOCK_SM


class Nvml:
  """One GPU's NVML handle: the first index in CUDA_VISIBLE_DEVICES, else index 0 (also
  where that variable names GPUs by UUID)."""

  def __init__(self, lib, handle):
    self._lib, self._handle = lib, handle

  @classmethod
  def open(cls, index: int | None = None) -> Nvml | None:
    """The handle of GPU `index`, or None where NVML or the GPU is missing, or the
    energy counter is not supported."""
    try:
      lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
      return None
    if index is None:
      visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
      index = int(visible) if visible.isdigit() else 0
    handle = ctypes.c_void_p()
    if lib.nvmlInit_v2() != 0 or lib.nvmlDeviceGetHandleByIndex_v2(
        ctypes.c_uint(index), ctypes.byref(handle)) != 0:
      return None
    nvml = cls(lib, handle)
    return nvml if nvml.energy_mj() is not None else None

  def _read(self, fn: str, ctype, *args):
    value = ctype()
    rc = getattr(self._lib, fn)(self._handle, *args, ctypes.byref(value))
    return value.value if rc == 0 else None

  def energy_mj(self) -> int | None:
    """The board's energy counter in mJ, or None if unsupported."""
    return self._read("nvmlDeviceGetTotalEnergyConsumption", ctypes.c_ulonglong)

  def sm_mhz(self) -> int | None:
    """The SM clock now, in MHz."""
    return self._read("nvmlDeviceGetClockInfo", ctypes.c_uint, ctypes.c_uint(_CLOCK_SM))

  def power_w(self) -> float | None:
    """NVML's power reading now, in W."""
    mw = self._read("nvmlDeviceGetPowerUsage", ctypes.c_uint)
    return None if mw is None else mw / 1e3

  def power_limit_w(self) -> float | None:
    """The enforced power limit, in W."""
    mw = self._read("nvmlDeviceGetEnforcedPowerLimit", ctypes.c_uint)
    return None if mw is None else mw / 1e3

  def temperature_c(self) -> int | None:
    """The GPU's temperature, in °C."""
    return self._read("nvmlDeviceGetTemperature", ctypes.c_uint, ctypes.c_uint(0))
