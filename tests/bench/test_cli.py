"""End to end on the CPU: `moe-bench --quick` writes data, tables and plots; `report` merges."""
import json
import os
import re

import pytest

from bench import cli

REQUIRED = ("device", "config", "component", "mode", "framework", "impl", "wall_ms_median",
            "kernel_ms_median", "tflops", "gbps_strict", "parity_rel_err")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("bench"))
  argv = ["--quick", "--configs", "tiny", "--in-process", "--out", out, "--settle-s", "0.001"]
  return out, cli.main(argv)


def _records(out):
  with open(os.path.join(out, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_run_writes_every_artifact(run, capsys):
  out, code = run
  assert code == 0
  for name in ("results.jsonl", "results.md", "README.md", "COMMAND.txt", "latency.png",
               "throughput_vs_tokens.png", "roofline.png", "expert_load.png",
               "capacity_sweep.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert not os.path.exists(os.path.join(out, ".scratch"))


def test_rows_have_the_required_keys_and_pass_parity(run):
  out, _ = run
  recs = _records(out)
  env = [r for r in recs if r["record"] == "env"]
  assert len(env) == 1 and "torch" in env[0]["versions"] and "jax" in env[0]["versions"]
  assert any(r["record"] == "floor" for r in recs)
  rows = [r for r in recs if r["record"] == "row"]
  for r in rows:
    missing = [k for k in REQUIRED if k not in r]
    assert not missing, (r["framework"], r["impl"], missing)
  ok = [r for r in rows if r["status"] == "ok"]
  assert {(r["framework"], r["component"]) for r in ok} >= {
      (f, c) for f in ("jax", "torch") for c in ("routing", "pack", "combine", "experts", "layer")}
  for r in ok:
    assert r["wall_ms_median"] > 0 and r["kernel_ms_median"] is None  # no CUPTI on a CPU
    assert r["parity_ok"] is True, (r["framework"], r["component"], r["mode"], r["impl"],
                                    r["parity_detail"])
  skipped = [r for r in rows if r["status"] != "ok"]
  assert skipped and all(r["skipped_reason"] for r in skipped)  # never silent
  layer = [r for r in ok if r["component"] == "layer"]
  assert all(r["tflops"] > 0 and r["load_cv"] is not None for r in layer)
  pack = [r for r in ok if r["component"] == "pack"]
  assert all(r["gbps_strict"] > 0 for r in pack)
  assert all(r["settle_s"] == 0.001 and r["settle_calls"] >= 1 for r in ok)


def test_report_names_the_settle_time(run):
  out, _ = run
  with open(os.path.join(out, "results.md")) as f:
    assert "each row ran back to back, untimed, for 0.001 s (--settle-s)" in f.read()
  from bench import report
  records = _records(out)
  rows = [r for r in records if r["record"] == "row" and r["status"] == "ok"]
  rows[0]["settle_s"] = 0  # a merged run that did not settle
  assert "each row run with --settle-s ran back to back" in report.markdown(records)


def test_report_merges_runs(run, tmp_path, capsys):
  out, _ = run
  merged = str(tmp_path / "merged")
  assert cli.main(["report", out, out, "--out", merged, "--no-plots"]) == 0
  printed = capsys.readouterr().out
  assert "| config" in printed and "speedup (wall)" in printed
  with open(os.path.join(merged, "results.md")) as f:
    text = f.read()
  assert "## Side by side" in text and "## tiny" in text
  rows = [r for r in _records(merged) if r["record"] == "row"]
  assert len(rows) == 2 * len([r for r in _records(out) if r["record"] == "row"])


def test_merge_keeps_measured_rows_over_later_skips():
  from bench import report
  key = dict(record="row", device="d", config="c", component="layer", mode="fwd",
             framework="jax", impl="xla/binned")
  ok1, ok2 = dict(key, status="ok", wall_ms_median=2.0), dict(key, status="ok", wall_ms_median=1.0)
  skip = dict(key, status="skipped", skipped_reason="deadline")
  other = dict(key, impl="pallas/binned", status="skipped", skipped_reason="deadline")
  _, _, rows = report.merge([ok1, skip, other])
  assert sorted((r["impl"], r["status"]) for r in rows) == [("pallas/binned", "skipped"),
                                                            ("xla/binned", "ok")]
  _, _, rows = report.merge([ok1, skip, ok2])  # a later measurement still wins
  assert [r["wall_ms_median"] for r in rows] == [1.0]


def test_merge_and_ranking_prefer_checked_rows():
  from bench import report
  key = dict(record="row", device="d", config="c", component="layer", mode="fwd",
             framework="jax", impl="xla/binned", status="ok")
  checked = dict(key, wall_ms_median=2.0, parity_ok=True)
  unchecked = dict(key, wall_ms_median=1.0, parity_ok=None)
  failed = dict(key, wall_ms_median=0.5, parity_ok=False)
  error = dict(key, status="error", wall_ms_median=None, skipped_reason="killed")
  for records, want in [([checked, unchecked], 2.0), ([unchecked, checked], 2.0),
                        ([checked, failed], 0.5), ([checked, error], 2.0),
                        ([error, unchecked], 1.0)]:
    _, _, rows = report.merge(records)
    assert [r["wall_ms_median"] for r in rows] == [want]
  other = dict(key, impl="pallas/binned", wall_ms_median=0.1, parity_ok=None)
  best = report.best_rows([checked, other, dict(key, impl="x", wall_ms_median=0.2,
                                                parity_ok=False)])
  assert best[("c", "layer", "fwd")]["jax"]["wall_ms_median"] == 2.0  # only checked rows rank


def test_report_of_a_results_file_in_the_working_directory(tmp_path, monkeypatch, capsys):
  # The default output directory of `report results.jsonl` is ".", the file's own.
  src = os.path.join(os.path.dirname(cli.__file__), "results", "nvidia-h200", "targets-bd196d3",
                     "notebook")  # a committed run
  with open(os.path.join(src, "results.jsonl")) as f:
    data = f.read()
  (tmp_path / "results.jsonl").write_text(data)
  monkeypatch.chdir(tmp_path)
  assert cli.main(["report", "results.jsonl", "--no-plots"]) == 0
  assert re.search(r"^\| notebook +\| layer ", (tmp_path / "results.md").read_text(), re.M)
  assert (tmp_path / "results.jsonl").read_text() == data  # the input, not rewritten
