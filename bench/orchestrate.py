"""The parent side of a run: one worker per (config, framework), then parity and figures.

For each config the torch worker runs, then the JAX worker (in-process on a CPU, one
process each on a GPU). When both are done, every row is checked against its
reference (`bench.parity`), bracketed by the floors (`bench.metrics`), and appended
to results.jsonl, so a run cut short keeps every finished config.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from bench import configs, floors, hashgen, inputs, metrics, parity, worker
from bench.plan import CaseSpec
from bench.timing import Protocol

# A worker that outlives --deadline by this much is killed (its rows become errors).
KILL_GRACE_S = 90.0


def _json_line(rec: dict) -> str:
  return json.dumps(rec, default=worker._json_default, sort_keys=False)  # pylint: disable=protected-access


def _subprocess(spec: worker.WorkerSpec, kill_at: float | None) -> Iterator[dict]:
  fd, path = tempfile.mkstemp(suffix=".json", prefix="moe-bench-spec-")
  with os.fdopen(fd, "w") as f:
    json.dump(spec.to_json(), f)
  # A worker has the GPU to itself, so JAX may take its usual up-front pool; the
  # fraction leaves room for the CUDA context and the CUPTI buffers.
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
  proc = subprocess.Popen([sys.executable, "-m", "bench.worker", path], stdout=subprocess.PIPE,
                          text=True, env=env, start_new_session=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  lines: queue.Queue = queue.Queue()

  def pump():
    for line in proc.stdout:
      lines.put(line)
    lines.put(None)
  threading.Thread(target=pump, daemon=True).start()
  killed = False
  try:
    while True:
      try:
        line = lines.get(timeout=1.0)
      except queue.Empty:
        if kill_at is not None and time.time() > kill_at and not killed:
          os.killpg(proc.pid, signal.SIGKILL)  # our own worker, by its process group id
          killed = True
        continue
      if line is None:
        break
      if line.startswith(worker.PREFIX):
        yield json.loads(line[len(worker.PREFIX):])
      else:
        sys.stderr.write(line)
    code = proc.wait()
    yield dict(record="exit", code=code, killed=killed)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    os.unlink(path)


def resolve_parity(rows: list[dict], cfg: configs.BenchConfig, scratch: str) -> None:
  """Fills the parity columns of one config's rows in place."""
  by_key = {(r["framework"], r["component"], r["mode"], r["impl"]): r for r in rows}
  router = None
  for fw in ("torch", "jax"):
    path = worker.router_path(scratch, cfg.name, fw)
    if os.path.exists(path):
      router = dict(np.load(path))
      break
  cache: dict[str, dict] = {}

  def arrays(row):
    path = row.get("parity_file")
    if not path or not os.path.exists(path):
      return None
    if path not in cache:
      cache[path] = dict(np.load(path))
    return cache[path]
  for row in rows:
    row.setdefault("parity_rel_err", None)
    row.setdefault("parity_ok", None)
    if row.get("status") != "ok":
      continue
    mine = arrays(row)
    if row["component"] == "routing" and mine is not None and router is not None:
      _routing_parity(row, mine, router, cfg)
      continue
    for ref_fw, ref_impl in parity.reference_candidates(row["framework"], row["component"],
                                                        row["variant"], row["impl"]):
      ref = by_key.get((ref_fw, row["component"], row["mode"], ref_impl))
      theirs = arrays(ref) if ref is not None and ref.get("status") == "ok" else None
      if mine is None or theirs is None:
        continue
      cap = inputs.capacity(cfg) if row["variant"] == "binned" else None
      row.update(parity.compare(mine, theirs, component=row["component"], dtype=cfg.dtype,
                                num_experts=cfg.num_experts, capacity=cap, router=router))
      row["parity_ref"] = f"{ref_fw}:{ref_impl}"
      if row["component"] == "layer" and "indices" in mine:
        row.update(metrics.load_stats(mine["indices"], cfg.num_experts, cap))
      break
    else:
      row["parity_ref"] = None
      row["parity_note"] = "no reference row ran"
  for row in rows:
    row.pop("parity_file", None)


def _routing_parity(row: dict, mine: dict, router: dict, cfg: configs.BenchConfig) -> None:
  """Routing rows against the float64 oracle, on the parity token subset."""
  sub = router["sub"]
  dw = None
  if "dx" in mine:
    spec = inputs.dw_spec(cfg)
    dw = hashgen.values_numpy(spec.shape, spec.seed, spec.salt, spec.scale_log2)[sub]
  ref = parity.routing_oracle(router, cfg.top_k, dw)
  here = dict(indices=mine["indices"][sub], weights=mine["weights"][sub])
  if "dx" in mine:
    here["dx"] = mine["dx"]
  row.update(parity.compare(here, ref, component="routing", dtype=cfg.dtype,
                            num_experts=cfg.num_experts, capacity=None,
                            router=dict(router, sub=np.arange(sub.size))))
  row["parity_ref"] = "float64 oracle"


def finish_row(row: dict, cfg: configs.BenchConfig, env: dict, best_floors: dict) -> dict:
  """Adds the run's identity and the derived figures to a row."""
  row.update(device=env["device"], driver=env["driver"], run_id=env["run_id"])
  if row.get("status") == "ok":
    row.update(metrics.derive(row, cfg, best_floors))
  else:
    for key in ("wall_ms_median", "kernel_ms_median", "tflops", "gbps_strict", "parity_rel_err"):
      row.setdefault(key, None)
  return row


def run(cases: Sequence[CaseSpec], *, env: dict, protocol: Protocol, out_dir: str,
        isolate: bool, deadline_s: float | None, keep_scratch: bool, append: bool,
        on_record: Callable[[dict], None] = lambda rec: None) -> list[dict]:
  """Runs every planned case and writes results.jsonl; returns all records written."""
  os.makedirs(out_dir, exist_ok=True)
  scratch = os.path.join(out_dir, ".scratch", env["run_id"])
  jsonl = os.path.join(out_dir, "results.jsonl")
  t_start = time.time()
  deadline = t_start + deadline_s if deadline_s else None
  names = list(dict.fromkeys(c.config for c in cases))
  dtypes = sorted({configs.BY_NAME[n].dtype for n in names})
  floor_records: list[dict] = []
  measured: set[str] = set()
  written = [env]
  with open(jsonl, "a" if append else "w") as f:
    f.write(_json_line(env) + "\n")
  for name in names:
    cfg = configs.BY_NAME[name]
    rows: list[dict] = []
    pending: list[dict] = []
    # One worker per framework, in the order the plan lists them (--frameworks).
    for fw in dict.fromkeys(c.framework for c in cases if c.config == name):
      mine = tuple(c for c in cases if c.config == name and c.framework == fw)
      if not mine:
        continue
      spec = worker.WorkerSpec(config=name, framework=fw, cases=mine, protocol=protocol,
                               scratch=scratch,
                               floor_dtypes=tuple(dtypes) if fw not in measured else (),
                               deadline=deadline)
      measured.add(fw)
      if deadline is not None and time.time() > deadline:
        for case in mine:  # no worker is started once the deadline has passed
          row = worker.skipped_row(case, cfg, case.skip or
                                   "deadline: the run's --deadline passed before this row")
          rows.append(row)
          on_record(row)
        continue
      done: set = set()
      exit_rec: dict = {}

      def handle(rec: dict) -> None:
        kind = rec.get("record")
        if kind == "row":
          rows.append(rec)
          done.add((rec["component"], rec["mode"], rec["impl"]))
        elif kind in ("floor", "device"):
          rec.update(run_id=env["run_id"], device=env["device"])
          (floor_records if kind == "floor" else pending).append(rec)
        elif kind == "exit":
          exit_rec.update(rec)
        on_record(rec)
      if isolate:
        for rec in _subprocess(spec, deadline + KILL_GRACE_S if deadline else None):
          handle(rec)
      else:
        worker.run(spec, handle)
        handle(dict(record="exit", code=0))
      for case in mine:
        if (case.component, case.mode, case.impl) not in done:
          why = ("killed at the deadline" if exit_rec.get("killed") else
                 f"worker exited with code {exit_rec.get('code')} before this row")
          row = worker.skipped_row(case, cfg, why, status="error")
          rows.append(row)
          on_record(row)
    resolve_parity(rows, cfg, scratch)
    best = floors.best(floor_records)
    finished = [finish_row(r, cfg, env, best) for r in rows]
    with open(jsonl, "a") as f:
      new = [r for r in floor_records if r not in written] + pending + finished
      for rec in new:
        f.write(_json_line(rec) + "\n")
    written += new
    if not keep_scratch:
      shutil.rmtree(os.path.join(scratch, name), ignore_errors=True)
  if not keep_scratch:
    shutil.rmtree(os.path.join(out_dir, ".scratch"), ignore_errors=True)
  return written
