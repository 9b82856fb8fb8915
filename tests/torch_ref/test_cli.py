"""The two command-line placeholders."""
from __future__ import annotations

import pytest

import moe_torch_ref as mtr
from bench import cli as bench_cli
from parity import cli as parity_cli


def test_parity_placeholder(capsys):
  with pytest.raises(SystemExit) as exit_info:
    parity_cli.main(["--help"])
  assert exit_info.value.code == 0
  assert "usage: moe-parity" in capsys.readouterr().out
  assert parity_cli.main([]) == 2
  assert "not built yet" in capsys.readouterr().err


def test_bench_smoke_table(capsys):
  assert bench_cli.main(["--tokens", "16", "--repeats", "1", "--warmup", "0"]) == 0
  out = capsys.readouterr().out
  rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in out.splitlines()
          if line.startswith("| ") and "implementation" not in line}
  assert set(rows) == set(mtr.IMPLEMENTATIONS)
  for name, cells in rows.items():
    assert float(cells[0]) < 1e-5, (name, cells)  # max abs diff vs binned_loop
    assert float(cells[1]) > 0, (name, cells)     # median ms
