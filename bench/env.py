"""Where a run happened: device, driver, library versions, command and date.

Read without importing JAX or PyTorch (nvidia-smi and package metadata), so the
parent process stays light and never touches the GPU itself.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys

PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda12-pjrt",
            "jax-cuda13-pjrt", "flax", "torch", "triton", "pytorch-triton", "transformers",
            "numpy", "ml_dtypes")


def gpus() -> list[dict]:
  """GPUs seen by nvidia-smi: name, driver, memory (bytes); empty without one."""
  if shutil.which("nvidia-smi") is None:
    return []
  try:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
         "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30, check=True)
  except (OSError, subprocess.SubprocessError):
    return []
  found = []
  for line in out.stdout.strip().splitlines():
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 3:
      found.append(dict(name=parts[0], driver=parts[1], memory_bytes=int(float(parts[2])) << 20))
  return found


def jax_backend(timeout_s: float = 300) -> tuple[str | None, str]:
  """(jax.default_backend(), the last line JAX wrote to stderr), asked in a subprocess.

  A subprocess, because initialising JAX's GPU backend here would hold the device (and,
  by default, most of its memory) in this parent process for the whole run. Without
  preallocation the child only initialises the backend. The backend is None when JAX
  cannot be imported or does not answer; the detail then says why.
  """
  child_env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  try:
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                         capture_output=True, text=True, timeout=timeout_s, env=child_env,
                         check=False)
  except (OSError, subprocess.SubprocessError) as err:
    return None, f"{type(err).__name__}: {err}"
  lines = out.stdout.strip().splitlines()
  errors = out.stderr.strip().splitlines()
  detail = errors[-1].strip() if errors else ""
  if out.returncode != 0 or not lines:
    return None, detail or f"exit status {out.returncode}"
  return lines[-1].strip(), detail


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return out


def host_memory_bytes() -> int:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError):
    return 8 << 30


def collect(argv: list[str]) -> dict:
  """The run's environment record."""
  g = gpus()
  if g:
    device, driver, memory = g[0]["name"], g[0]["driver"], g[0]["memory_bytes"]
  else:
    device, driver, memory = f"CPU: {cpu_name()} ({os.cpu_count()} cores)", None, host_memory_bytes()
  now = datetime.datetime.now(datetime.timezone.utc)
  return dict(record="env", run_id=now.strftime("%Y%m%dT%H%M%SZ"), date=now.isoformat(),
              device=device, driver=driver, gpu=bool(g), device_memory_bytes=memory,
              gpu_count=len(g), command=" ".join([_program()] + list(argv)),
              python_executable=sys.executable, platform=platform.platform(),
              versions=versions())


def _program() -> str:
  """How the benchmark was started: `moe-bench` or `python -m bench.cli`."""
  first = os.path.basename(sys.argv[0]) if sys.argv else ""
  return "python -m bench.cli" if first == "cli.py" else "moe-bench"


def slug(device: str) -> str:
  """A directory name for a device: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
  if device.startswith("CPU"):
    return "cpu"
  return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"
