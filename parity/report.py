"""Parity reports: the environment header, a terminal table, JSON and markdown."""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import re
import subprocess
import sys

import jax
from tabulate import tabulate

from parity import torch_side
from parity.run import CaseResult, Row
from parity.tolerances import TOLERANCES

_REPO = pathlib.Path(__file__).resolve().parent.parent
_PACKAGES = ("jax", "jaxlib", "flax", "torch", "transformers", "numpy", "ml_dtypes", "safetensors")
_COLUMNS = ("case", "precision", "jax_impl", "torch_impl", "stage", "status", "max_abs",
            "max_rel", "rel_fro", "tolerance", "note")
_TERMINAL_NOTE = 72


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def _git(*args: str) -> str:
  try:
    out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10,
                         check=True)
    return out.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def environment(command: str, mode: str) -> dict:
  """Device, versions, date, command and git state of this run."""
  dev = jax.devices()[0]
  status = _git("status", "--porcelain", "--untracked-files=no")
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": command,
      "mode": mode,
      "device": {
          "jax": f"{dev.platform}: {getattr(dev, 'device_kind', dev.platform)}",
          "torch": torch_side.device_name(),
          "host_cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(),
      },
      "versions": {"python": platform.python_version(),
                   **{p: _version(p) for p in _PACKAGES}},
      "git": {"commit": _git("rev-parse", "HEAD"),
              "dirty": bool(status) if status != "unknown" else "unknown"},
  }


def device_slug(env: dict) -> str:
  """A file-name-safe device name, e.g. "nvidia-h100-80gb-hbm3" or "cpu"."""
  name = env["device"]["torch"]
  return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def summary(rows: list[Row]) -> dict:
  counts = {s: 0 for s in ("pass", "FAIL", "error", "n/a", "skip")}
  for row in rows:
    counts[row.status] += 1
  failures = [f"{r.case} [{r.precision}] jax:{r.jax_impl} vs {r.torch_impl}: {r.stage}"
              + (f" ({r.note})" if r.note else "") for r in rows if r.failed]
  return {"counts": counts, "failures": failures, "passed": not failures}


def _fmt(value) -> str:
  return "" if value is None else f"{value:.1e}"


def _cells(row: Row, note_width: int | None) -> list[str]:
  note = row.note
  if note_width is not None and len(note) > note_width:
    note = note[:note_width - 1] + "…"
  return [row.case, row.precision, row.jax_impl, row.torch_impl, row.stage, row.status,
          _fmt(row.max_abs), _fmt(row.max_rel), _fmt(row.rel_fro), row.tolerance, note]


def terminal(results: list[CaseResult], env: dict, *, failures_only: bool = False) -> str:
  """The table for the terminal, one row per case x precision x pair x stage, then a summary."""
  rows = [r for res in results for r in res.rows]
  shown = [r for r in rows if r.failed] if failures_only else rows
  lines = [f"moe-parity  {env['date']}  jax device: {env['device']['jax']}  "
           f"torch device: {env['device']['torch']}",
           f"command: {env['command']}", ""]
  if shown:
    lines.append(tabulate([_cells(r, _TERMINAL_NOTE) for r in shown], headers=_COLUMNS,
                          tablefmt="simple", disable_numparse=True))
  lines.append("")
  for res in results:
    lines.append(f"  {res.case.name}: {res.seconds:.1f} s")
  s = summary(rows)
  c = s["counts"]
  lines.append(f"{len(rows)} rows: {c['pass']} pass, {c['FAIL']} FAIL, {c['error']} error, "
               f"{c['n/a']} n/a, {c['skip']} skip")
  if s["failures"]:
    failed_stages = sorted({r.stage for r in rows if r.failed})
    lines.append("FAILED stages: " + ", ".join(failed_stages))
    lines += ["  " + f for f in s["failures"]]
  else:
    lines.append("PASSED")
  return "\n".join(lines)


def _tolerance_json() -> dict:
  return {table: {stage: dataclasses.asdict(tol) for stage, tol in entries.items()}
          for table, entries in TOLERANCES.items()}


def to_json(results: list[CaseResult], env: dict) -> dict:
  rows = [r for res in results for r in res.rows]
  return {
      "environment": env,
      "cases": [{"name": res.case.name, "about": res.case.about, "seconds": round(res.seconds, 2),
                 **res.case.describe()} for res in results],
      "tolerances": _tolerance_json(),
      "summary": summary(rows),
      "rows": [dataclasses.asdict(r) for r in rows],
  }


def _md_table(headers, rows) -> str:
  escaped = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
  return tabulate(escaped, headers=headers, tablefmt="github", disable_numparse=True)


def to_markdown(results: list[CaseResult], env: dict) -> str:
  rows = [r for res in results for r in res.rows]
  s = summary(rows)
  c = s["counts"]
  out = ["# moe-parity report", "",
         f"- date: {env['date']}",
         f"- command: `{env['command']}`",
         f"- mode: {env['mode']}",
         f"- device: jax {env['device']['jax']}; torch {env['device']['torch']}; "
         f"host {env['device']['host_cpu']} ({env['device']['cpu_count']} CPUs)",
         "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
         f"- git: {env['git']['commit']}" + (" (uncommitted changes)" if env['git']['dirty'] is True else ""),
         *([] if env.get("complete", True) else ["- **incomplete**: the run was still going or was cut short"]),
         f"- result: **{'PASSED' if s['passed'] else 'FAILED'}**: {c['pass']} pass, {c['FAIL']} FAIL, "
         f"{c['error']} error, {c['n/a']} n/a, {c['skip']} skip", ""]
  if s["failures"]:
    out += ["## Failures", ""] + [f"- {f}" for f in s["failures"]] + [""]
  out += ["## Cases", ""]
  case_rows = []
  for res in results:
    d = res.case.describe()
    case_rows.append([res.case.name, d["T"], d["H"], d["I"], d["E"], d["K"], d["capacity_factor"],
                      d["dtype"], d["scheme"], d["router"], d["activation"], d["stages"],
                      f"{res.seconds:.1f}", res.case.about])
  out.append(_md_table(["case", "T", "H", "I", "E", "K", "capacity", "dtype", "init", "router",
                        "activation", "stages", "s", "about"], case_rows))
  out += ["", "## Tolerances", ""]
  for table, entries in TOLERANCES.items():
    out += [f"### {table}", "", _md_table(
        ["stage", "kind", "rel_fro", "abs_scaled", "reason"],
        [[st, t.kind, _fmt(t.rel_fro), _fmt(t.abs_scaled), t.reason] for st, t in entries.items()]),
        ""]
  out += ["## Results", ""]
  for res in results:
    out += [f"### {res.case.name}", "", _md_table(_COLUMNS[1:], [_cells(r, None)[1:] for r in res.rows]),
            ""]
  return "\n".join(out)


def _finite(value):
  """JSON has no inf or nan: write them as the strings "inf", "-inf", "nan"."""
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_finite(v) for v in value]
  return value


def write(results: list[CaseResult], env: dict, directory: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes parity-<mode>-<device>.json and .md into `directory`; returns both paths."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  stem = f"parity-{env['mode']}-{device_slug(env)}"
  json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
  json_path.write_text(json.dumps(_finite(to_json(results, env)), indent=1, allow_nan=False) + "\n")
  md_path.write_text(to_markdown(results, env) + "\n")
  return json_path, md_path


def python_command(argv: list[str]) -> str:
  """The command line as run, e.g. "moe-parity --small" or "python -m parity --full"."""
  import shlex  # pylint: disable=import-outside-toplevel
  prog = pathlib.Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "moe-parity"
  if prog in ("__main__.py", "-m", "-c", ""):
    prog = "python -m parity"
  return " ".join([prog, shlex.join(argv)]) if argv else prog
