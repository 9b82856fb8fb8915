"""End to end: `moe-parity` on the small catalogue passes, and injected faults fail and name their stage.

Each injected fault perturbs the JAX side of one stage (parity/jax_side.py). The
"ties" case has nonzero biases and exact router ties, so all three faults show in it:
  glu_alpha  GLU alpha 1.0 instead of 1.702   -> expert_out fails, routing still passes
  drop_bias  no down-projection bias          -> expert_out fails, routing still passes
  tie_break  ties go to the higher index      -> expert_indices fails, and nothing else
             (downstream stages run on the reference's routing, so they still pass)
"""
from __future__ import annotations

import json
import re

import pytest

from moe_jax import capacity_for
from moe_jax.dispatch import grouped_fits
from parity import cases, cli

UPSTREAM = {"router_logits", "expert_indices", "expert_weights", "dispatched", "dropped"}


def _run(tmp_path, capsys, *args):
  code = cli.main(["--small", "--no-progress", "--out", str(tmp_path), *args])
  return code, capsys.readouterr().out


def _failed_stages(out: str) -> set[str]:
  match = re.search(r"^FAILED stages: (.*)$", out, re.MULTILINE)
  return set(match.group(1).split(", ")) if match else set()


def _report(tmp_path) -> dict:
  (path,) = tmp_path.glob("parity-small-*.json")
  return json.loads(path.read_text())


def test_small_catalogue_passes_and_writes_reports(tmp_path, capsys):
  code, out = _run(tmp_path, capsys)
  assert code == 0, out[-4000:]
  assert "PASSED" in out
  report = _report(tmp_path)
  assert [c["name"] for c in report["cases"]] == list(cases.NAMES)
  assert report["summary"]["passed"] and report["summary"]["counts"]["FAIL"] == 0
  env = report["environment"]
  for key in ("date", "command", "device", "versions"):
    assert env[key], key
  for package in ("python", "jax", "jaxlib", "torch", "transformers"):
    assert package in env["versions"]
  (md,) = tmp_path.glob("parity-small-*.md")
  text = md.read_text()
  for name in cases.NAMES:
    assert f"### {name}" in text
    assert name in out
  # Every case compares at least its routing stages against some reference.
  seen = {(r["case"], r["stage"]) for r in report["rows"] if r["status"] == "pass"}
  for name in cases.NAMES:
    assert (name, "expert_indices") in seen and (name, "combine") in seen


@pytest.mark.parametrize("inject, stage", [
    ("glu_alpha", "expert_out"),
    ("drop_bias", "expert_out"),
    ("tie_break", "expert_indices"),
])
def test_injected_fault_fails_and_names_its_stage(tmp_path, capsys, inject, stage):
  code, out = _run(tmp_path, capsys, "--cases", "ties", "--inject", inject, "--failures-only",
                   "--implementations", "binned", "grouped", "transformers")
  assert code == 1, out[-4000:]
  failed = _failed_stages(out)
  assert stage in failed, out[-4000:]
  if inject == "tie_break":
    assert failed == {"expert_indices"}, failed
  else:
    assert not failed & UPSTREAM, failed


def test_pallas_implementation_interpreted(tmp_path, capsys):
  code, out = _run(tmp_path, capsys, "--cases", "notebook-cf1.0", "--jax-impl", "pallas",
                   "--implementations", "binned")
  assert code == 0, out[-4000:]
  rows = _report(tmp_path)["rows"]
  assert {r["jax_impl"] for r in rows if r["status"] == "pass"} == {"pallas"}


def test_pallas_grouped_binned_interpreted(tmp_path, capsys):
  """mixtral-cf0.5-bf16 small: binned "pallas" in the grouped layout (grouped matmuls
  over each expert's kept slots) against the padded torch references."""
  (case,) = cases.select(["mixtral-cf0.5-bf16"], small=True)
  assert grouped_fits(case.tokens * case.top_k, case.experts,
                      capacity_for(case.capacity_factor, case.tokens, case.top_k, case.experts))
  code, out = _run(tmp_path, capsys, "--cases", "mixtral-cf0.5-bf16", "--jax-impl", "pallas",
                   "--implementations", "binned", "grouped")
  assert code == 0, out[-4000:]
  passed = {r["stage"] for r in _report(tmp_path)["rows"] if r["status"] == "pass"}
  assert {"dispatched", "dropped", "expert_out", "combine", "output",
          "grad:experts.gate_up_proj"} <= passed, passed


def test_unknown_case_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["--cases", "no-such-case"])
  assert exc.value.code == 2
  assert "no-such-case" in capsys.readouterr().err


def test_an_unwritable_out_is_a_usage_error_before_any_case(tmp_path, capsys, monkeypatch):
  def run_case(*args, **kwargs):
    raise AssertionError("a case ran")
  monkeypatch.setattr(cli.run, "run_case", run_case)
  blocker = tmp_path / "file"
  blocker.write_text("")  # a file where --out's parent directory should be
  with pytest.raises(SystemExit) as exc:
    cli.main(["--cases", "ties", "--no-progress", "--out", str(blocker / "out")])
  assert exc.value.code == 2
  assert f"--out {blocker / 'out'}: cannot create the directory (" in capsys.readouterr().err
