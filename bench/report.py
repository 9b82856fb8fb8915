"""Markdown from results.jsonl: the side-by-side table, per-config detail, and merging.

The side-by-side table takes, for each (config, component, mode), the fastest
parity-ok row of each framework (by median wall time) and puts JAX and PyTorch in
one line with speedup = PyTorch ms / JAX ms (> 1: JAX is faster). The detail tables
list every row, skipped and failed ones included, with the reason.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence

from tabulate import tabulate

from bench import configs, floors, metrics

ROW_KEY = ("device", "config", "component", "mode", "framework", "impl")
NOTES = [
    "speedup = best PyTorch time / best JAX time for the same config, component and mode "
    "(fwd or fwd+bwd; > 1: JAX is faster), whichever dispatch each best row uses: a binned "
    "row drops slots (its `drop` column) that a dropless one computes, so compare binned "
    "with torch `binned` in the detail tables; 'vs torch' there is the same ratio per row.",
    "wall = median wall time per call over back-to-back calls with one sync per sample, "
    "a sample holding as many calls as fill the target sample (20 ms by default; a longer "
    "call runs alone with its sync); latency = median of single calls each waited for, "
    "dispatch and sync included; kernel = median per-call sum of GPU kernel times from "
    "CUPTI (n/a without a GPU).",
    "SM MHz = median SM clock that nvidia-smi sampled during the row's timed samples, "
    "with the share of those samples whose clock-event reasons include a power cap: a "
    "capped row's wall time is a power-limited throughput, which its kernel time, taken "
    "in shorter stretches, need not show (— without a GPU).",
    "`!` marks a row whose output disagrees with its reference beyond tolerance: it is "
    "still timed and listed, never counted as best. A parity of `—` means no reference "
    "for the row ran in its run: it is listed, but not counted as best either.",
    "% roofline = max(FLOPs / matmul floor, min bytes / copy floor) / wall time; the copy "
    "floor is measured on a buffer larger than the caches, so rows whose data fit in cache "
    "can exceed 100%.",
    "FLOPs are nominal: every row is credited T*K routed slots. A binned row that drops a "
    "fraction d of them (`drop`) computes only 1 - d of that work (pallas/binned skips the "
    "dropped slots' rows), so its TFLOP/s and % roofline can exceed the matmul floor.",
]


def read(paths: Iterable[str]) -> list[dict]:
  """Records of one or more results.jsonl files (or directories holding one), in order."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      path = os.path.join(path, "results.jsonl")
    if not (path.endswith(".jsonl") and os.path.isfile(path)):
      print(f"moe-bench report: skipping {path} (not a results.jsonl or a directory with one)",
            file=sys.stderr)
      continue
    with open(path) as f:
      out.extend(json.loads(line) for line in f if line.strip())
  return out


def _evidence(row: dict) -> int:
  """0 skipped, 1 errored, 2 timed without a parity verdict, 3 timed and checked."""
  if row.get("status") == "skipped":
    return 0
  if not _ok(row):
    return 1
  return 2 if row.get("parity_ok") is None else 3


def merge(records: Sequence[dict]) -> tuple[list[dict], list[dict], list[dict]]:
  """(envs, floors, rows): rows deduplicated by ROW_KEY, with their derived figures
  recomputed against the best floors measured on their device.

  Of the rows of one key, a later row replaces an earlier one unless it carries less
  evidence (`_evidence`): a skipped row (e.g. cut by a later run's deadline) never
  replaces a measured one, an errored row never replaces a timed one, and a timed row
  whose run had no parity reference never replaces a timed row with a parity verdict
  (pass or fail).
  """
  envs = [r for r in records if r.get("record") == "env"]
  floor_recs = [r for r in records if r.get("record") == "floor"]
  rows: dict[tuple, dict] = {}
  for r in records:
    if r.get("record") == "row":
      key = tuple(r.get(k) for k in ROW_KEY)
      if key not in rows or _evidence(r) >= _evidence(rows[key]):
        rows[key] = r
  best = {}
  for device in {r.get("device") for r in floor_recs}:
    best[device] = floors.best([r for r in floor_recs if r.get("device") == device])
  merged = []
  for r in rows.values():
    r = dict(r)
    if r.get("status") == "ok" and r.get("device") in best:
      r.update(metrics.derive(r, configs.BenchConfig.from_row(r), best[r["device"]]))
    merged.append(r)
  return envs, floor_recs, merged


def _f(value, digits: int = 3) -> str:
  if value is None:
    return "—"
  if isinstance(value, str):
    return value
  if value == 0:
    return "0"
  if abs(value) >= 1000:
    return f"{value:,.0f}"
  return f"{value:.{digits}g}"


def _parity(row: dict) -> str:
  err = row.get("parity_rel_err")
  if err is None:
    return "—"
  mark = "" if row.get("parity_ok") else "! "
  return f"{mark}{err:.1e}"


def _ok(row: dict) -> bool:
  return row.get("status") == "ok" and row.get("wall_ms_median") is not None


def best_rows(rows: Sequence[dict]) -> dict[tuple, dict[str, dict]]:
  """{(config, component, mode): {framework: fastest row that passed parity}}.

  A row without a parity verdict (its run timed no reference for it) is listed in the
  detail tables but never ranked: the summary only compares checked outputs.
  """
  out: dict[tuple, dict[str, dict]] = {}
  for r in rows:
    if not _ok(r) or r.get("parity_ok") is not True:
      continue
    slot = out.setdefault((r["config"], r["component"], r["mode"]), {})
    cur = slot.get(r["framework"])
    if cur is None or r["wall_ms_median"] < cur["wall_ms_median"]:
      slot[r["framework"]] = r
  return out


def _order(rows: Sequence[dict]) -> list[str]:
  known = list(configs.BY_NAME)
  names = list(dict.fromkeys(r["config"] for r in rows))
  return sorted(names, key=lambda n: known.index(n) if n in known else len(known))


def side_by_side(rows: Sequence[dict], *, components: Sequence[str] | None = None,
                 configs_only: Sequence[str] | None = None) -> str:
  """The JAX | PyTorch table with speedup columns (github markdown)."""
  best = best_rows(rows)
  table = []
  comp_order = {c: i for i, c in enumerate(configs.COMPONENTS)}
  for name in _order(rows):
    if configs_only is not None and name not in configs_only:
      continue
    keys = sorted((k for k in best if k[0] == name),
                  key=lambda k: (comp_order[k[1]], configs.MODES.index(k[2])))
    for key in keys:
      if components is not None and key[1] not in components:
        continue
      j, t = best[key].get("jax"), best[key].get("torch")

      def ratio(field):
        if j and t and j.get(field) and t.get(field):
          return f"{t[field] / j[field]:.2f}x"
        return "—"
      table.append([name, key[1], key[2],
                    j["impl"] if j else "—", _f(j and j["wall_ms_median"]),
                    _f(j and j.get("kernel_ms_median")),
                    t["impl"] if t else "—", _f(t and t["wall_ms_median"]),
                    _f(t and t.get("kernel_ms_median")),
                    ratio("wall_ms_median"), ratio("kernel_ms_median")])
  headers = ["config", "component", "mode", "JAX impl", "JAX wall ms", "JAX kernel ms",
             "PyTorch impl", "PyTorch wall ms", "PyTorch kernel ms", "speedup (wall)",
             "speedup (kernel)"]
  return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def detail(rows: Sequence[dict], name: str) -> str:
  """Every row of one config."""
  sel = [r for r in rows if r["config"] == name]
  best = best_rows(sel)
  comp_order = {c: i for i, c in enumerate(configs.COMPONENTS)}
  sel.sort(key=lambda r: (comp_order[r["component"]], configs.MODES.index(r["mode"]),
                          r["framework"] != "jax", r.get("wall_ms_median") or float("inf")))
  table = []
  for r in sel:
    if not _ok(r):
      table.append([r["component"], r["mode"], r["framework"], r["impl"], r.get("status")]
                   + [""] * 15 + [r.get("skipped_reason") or ""])
      continue
    t = best.get((name, r["component"], r["mode"]), {}).get("torch")
    vs = f"{t['wall_ms_median'] / r['wall_ms_median']:.2f}x" if t else "—"
    mem = r.get("peak_mem_bytes")
    table.append([
        r["component"], r["mode"], r["framework"], r["impl"], _f(r["wall_ms_median"]),
        _f(r.get("wall_ms_p95")), _f(r.get("wall_ms_std")), _f(r.get("latency_ms_median")),
        _f(r.get("kernel_ms_median")), _clock(r), _f(r.get("compile_ms")),
        _f(r.get("tokens_per_s")),
        _f(r.get("tflops")), _f(r.get("gbps_strict")), _f(r.get("pct_roofline")),
        _f(mem / 2**30 if mem else None), _f(r.get("load_cv")), _f(r.get("drop_rate")),
        _parity(r), vs, r.get("detail") or ""])
  headers = ["component", "mode", "framework", "impl", "wall ms", "p95", "std", "latency ms",
             "kernel ms", "SM MHz", "compile ms", "tokens/s", "TFLOP/s", "GB/s strict",
             "% roofline", "peak GiB", "load CV", "drop", "parity", "vs torch", "note"]
  return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _clock(row: dict) -> str:
  """The median SM clock of the row's samples, with the share of them power-capped.

  Example:
    >>> _clock(dict(gpu_sm_mhz_median=1485.0, gpu_power_capped_share=0.92))
    '1485 (cap 92%)'
  """
  mhz = row.get("gpu_sm_mhz_median")
  if mhz is None:
    return "—"
  share = row.get("gpu_power_capped_share") or 0.0
  return f"{mhz:.0f}" + (f" (cap {share:.0%})" if share else "")


def _floors_table(floor_recs: Sequence[dict]) -> str:
  table = [[r.get("device"), r["framework"], r["dtype"], r["matmul_n"], _f(r["matmul_tflops"]),
            _f(r["copy_gbps"])] for r in floor_recs]
  return tabulate(table, headers=["device", "framework", "dtype", "GEMM N", "matmul TFLOP/s",
                                  "copy GB/s"], tablefmt="github", disable_numparse=True)


def markdown(records: Sequence[dict], plots: Sequence[str] = ()) -> str:
  """The whole results.md."""
  envs, floor_recs, rows = merge(records)
  out = ["# moe-bench results", ""]
  for e in envs:
    v = ", ".join(f"{k} {val}" for k, val in e.get("versions", {}).items())
    out += [f"- run `{e['run_id']}` on **{e['device']}**"
            + (f" (driver {e['driver']})" if e.get("driver") else "") + f", {e['date']}",
            f"  - command: `{e['command']}`", f"  - versions: {v}"]
  quick = any(r.get("quick") for r in rows)
  timed = [r for r in rows if r.get("status") == "ok"]
  settled = [r for r in timed if r.get("settle_s")]
  settle = " / ".join(f"{v:g}" for v in sorted({r["settle_s"] for r in settled}))
  who = "each row" if len(settled) == len(timed) else "each row run with --settle-s"
  out += ["", "Protocol: warm-up, then >= 50 timed samples per row (each sample: back-to-back "
          "calls on rotated inputs, one sync); compile time apart."
          + (f" Before its samples {who} ran back to back, untimed, for {settle} s"
             " (--settle-s)." if settled else "")
          + (" **Some rows ran with --quick (fewer samples); they are not results.**"
             if quick else ""), ""]
  if not any(r.get("kernel_ms_median") for r in rows):
    out += ["Kernel times: n/a (no GPU, no CUPTI).", ""]
  out += ["## Side by side", "", side_by_side(rows), "", *[f"- {n}" for n in NOTES], ""]
  out += ["## Floors (measured in the same run)", "", _floors_table(floor_recs), "",
          "## Formulas", ""]
  for group, items in metrics.FORMULAS.items():
    out += [f"- {group}: " + "; ".join(f"{k}: {v}" for k, v in items.items() if v)]
  out.append("")
  for name in _order(rows):
    cfg = configs.BY_NAME.get(name)
    sample = next(r for r in rows if r["config"] == name)
    out += [f"## {name}", "",
            f"E={sample['E']} K={sample['K']} H={sample['H']} I={sample['I']} T={sample['T']} "
            f"{sample['dtype']}, capacity factor {sample['capacity_factor']}."
            + (f" {cfg.note}" if cfg and cfg.note else ""), "", detail(rows, name), ""]
  if plots:
    out += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
  return "\n".join(out) + "\n"


def headline(records: Sequence[dict]) -> str:
  """The README's table: the whole layer, main configs only."""
  _, _, rows = merge(records)
  main = [c.name for c in configs.MAIN] + [configs.CPU_MINI.name]
  return side_by_side(rows, components=("layer",), configs_only=main)
