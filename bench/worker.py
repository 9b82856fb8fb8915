"""Runs the planned rows of one (config, framework): builds, saves parity arrays, times.

Run in-process (CPU) or as `python -m bench.worker SPEC.json` (one process per
config and framework on a GPU, so that JAX and PyTorch never share the device
memory, CUPTI or a crash). It reports records through `emit`; as a process it
prints each one as a line `@@bench <json>` on stdout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import numpy as np

from bench import configs, metrics, telemetry, timing
from bench.plan import CaseSpec, is_peer

PREFIX = "@@bench "
_ORDER = {c: i for i, c in enumerate(configs.COMPONENTS)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerSpec:
  """What one worker runs.

  Attributes:
    config: config name.
    framework: "jax" or "torch".
    cases: the planned rows of this config and framework.
    protocol: the timing protocol.
    scratch: directory for parity arrays.
    floor_dtypes: dtypes whose floors this worker measures (empty: none).
    deadline: wall-clock time (time.time()) after which rows are skipped, or None.
  """
  config: str
  framework: str
  cases: tuple[CaseSpec, ...]
  protocol: timing.Protocol
  scratch: str
  floor_dtypes: tuple[str, ...] = ()
  deadline: float | None = None

  def to_json(self) -> dict:
    return dict(config=self.config, framework=self.framework,
                cases=[c.to_json() for c in self.cases],
                protocol=dataclasses.asdict(self.protocol), scratch=self.scratch,
                floor_dtypes=list(self.floor_dtypes), deadline=self.deadline)

  @classmethod
  def from_json(cls, d: dict) -> WorkerSpec:
    return cls(config=d["config"], framework=d["framework"],
               cases=tuple(CaseSpec.from_json(c) for c in d["cases"]),
               protocol=timing.Protocol(**d["protocol"]), scratch=d["scratch"],
               floor_dtypes=tuple(d["floor_dtypes"]), deadline=d.get("deadline"))


def parity_path(scratch: str, case: CaseSpec) -> str:
  name = f"{case.framework}__{case.component}__{case.mode}__{case.impl}".replace("/", "-")
  return os.path.join(scratch, case.config, name.replace("+", "p") + ".npz")


def router_path(scratch: str, config: str, framework: str) -> str:
  return os.path.join(scratch, config, f"router__{framework}.npz")


def base_row(case: CaseSpec, cfg: configs.BenchConfig) -> dict:
  """The identifying fields of a row, before any figure."""
  precision = ("fp32 operands and accumulation, no TF32 (JAX precision=highest, PyTorch "
               "allow_tf32=False)" if cfg.dtype == "float32" else
               "bf16 operands, fp32 accumulation")
  return dict(record="row", config=case.config, component=case.component, mode=case.mode,
              framework=case.framework, impl=case.impl, variant=case.variant,
              matmul_precision=precision, **cfg.shape_dict())


def skipped_row(case: CaseSpec, cfg: configs.BenchConfig, reason: str,
                status: str = "skipped") -> dict:
  return dict(base_row(case, cfg), status=status, skipped_reason=reason)


def _stats(prefix: str, samples: Sequence[float] | None) -> dict:
  if not samples:
    return {f"{prefix}_{k}": None for k in timing.STAT_KEYS}
  s = timing.summarize(samples)
  return {f"{prefix}_{k}": s[k] for k in timing.STAT_KEYS}


def _make_runner(spec: WorkerSpec, cfg: configs.BenchConfig):
  if spec.framework == "jax":
    from bench.runners_jax import JaxRunner  # pylint: disable=import-outside-toplevel
    return JaxRunner(cfg, spec.protocol)
  from bench.runners_torch import TorchRunner  # pylint: disable=import-outside-toplevel
  return TorchRunner(cfg, spec.protocol)


def run_case(runner, case: CaseSpec, cfg: configs.BenchConfig, spec: WorkerSpec,
             sampler: telemetry.Sampler | None = None) -> dict:
  """Builds, checks and times one row; exceptions propagate to the caller. With a
  `sampler`, the row gets the GPU clock fields of its samples' stretch."""
  protocol = spec.protocol
  built = runner.build(case)
  fn, compile_ms, mem = runner.prepare(built)
  saved: dict[str, np.ndarray] = {}
  mem_token = runner.memory_begin()
  to_epoch = time.time() - time.perf_counter()  # time_wall's clock to nvidia-smi's stamps
  wall = timing.time_wall(fn, built.inputs, runner.sync, protocol,
                          first_out_hook=lambda out: saved.update(built.extract(out)))
  mem.update(runner.memory_end(mem_token, built))
  path = parity_path(spec.scratch, case)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, **saved)
  kernel, kernel_method = runner.kernel_times(fn, built, protocol.iters)
  row = dict(base_row(case, cfg), status="ok", skipped_reason=None, detail=built.detail,
             iters=protocol.iters, warmup=protocol.warmup, inner=wall.inner,
             target_sample_ms=protocol.target_sample_ms, calibration=wall.calibration,
             settle_s=protocol.settle_s, settle_calls=wall.settle_calls,
             n_inputs=len(built.inputs), quick=protocol.quick,
             first_call_ms=wall.first_call_ms, compile_ms=compile_ms,
             **_stats("wall_ms", wall.samples_ms), **_stats("latency_ms", wall.latency_ms),
             **_stats("kernel_ms", kernel),
             kernel_method=kernel_method, kernel_calls=len(kernel) if kernel else None,
             parity_file=path, **mem)
  row.setdefault("peak_mem_bytes", None)
  row.setdefault("peak_mem_method", "n/a: no device allocator on a CPU")
  if row["compile_ms"] is None and case.impl.endswith("+compile"):
    row["compile_ms"] = max(0.0, wall.first_call_ms - row["wall_ms_median"])
  if built.routing is not None:
    row.update(metrics.load_stats(built.routing[0], cfg.num_experts, built.routing[1]))
  if sampler is not None:
    t0, t1 = (t + to_epoch for t in wall.samples_window)
    row.update(sampler.window(t0, t1), gpu_clock_method=telemetry.METHOD)
  return row


def run(spec: WorkerSpec, emit: Callable[[dict], None]) -> None:
  """Runs every case of `spec`, emitting device, floor, start and row records."""
  cfg = configs.BY_NAME[spec.config]
  runner = _make_runner(spec, cfg)
  emit(dict(record="device", framework=spec.framework, **runner.device_info()))
  os.makedirs(spec.scratch, exist_ok=True)
  sampler = telemetry.Sampler.start(getattr(runner, "gpu", False), directory=spec.scratch)
  try:
    _run_cases(spec, cfg, runner, sampler, emit)
  finally:
    if sampler is not None:
      sampler.close()


def _run_cases(spec: WorkerSpec, cfg: configs.BenchConfig, runner, sampler,
               emit: Callable[[dict], None]) -> None:
  if spec.floor_dtypes:
    from bench import floors  # pylint: disable=import-outside-toplevel
    measure = floors.measure_jax if spec.framework == "jax" else floors.measure_torch
    for rec in measure(spec.floor_dtypes, spec.protocol):
      emit(rec)
  if any(c.skip is None for c in spec.cases):
    path = router_path(spec.scratch, spec.config, spec.framework)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **runner.router_parity_arrays())
  cases = sorted(spec.cases, key=lambda c: _ORDER[c.component])  # stable: impl, mode kept
  component = None
  for case in cases:
    emit(dict(record="start", key=list(case.key)))
    if case.skip is not None:
      emit(skipped_row(case, cfg, case.skip))
      continue
    if spec.deadline is not None and time.time() > spec.deadline:
      emit(skipped_row(case, cfg, "deadline: the run's --deadline passed before this row"))
      continue
    if case.component != component:
      runner.release_inputs()
      component = case.component
    t0 = time.perf_counter()
    try:
      row = run_case(runner, case, cfg, spec, sampler)
    except Exception as e:  # pylint: disable=broad-except
      msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:400]
      if is_peer(case.impl):  # optional: a peer that cannot run is skipped, not failed
        row = skipped_row(case, cfg, f"optional peer unavailable: {msg}")
      else:
        row = skipped_row(case, cfg, msg, status="error")
      row["traceback"] = traceback.format_exc()[-2000:]
      runner.release_inputs()
    row["row_seconds"] = time.perf_counter() - t0
    emit(row)
  runner.release_inputs()


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of a worker process: `python -m bench.worker SPEC.json`."""
  argv = sys.argv[1:] if argv is None else argv
  with open(argv[0]) as f:
    spec = WorkerSpec.from_json(json.load(f))

  def emit(rec: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(rec, default=_json_default) + "\n")
    sys.stdout.flush()
  run(spec, emit)
  return 0


def _json_default(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
  sys.exit(main())
