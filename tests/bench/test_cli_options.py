"""moe-bench's refusals: bad options, a GPU whose JAX runs on the CPU, a report with no
records. Each exits 2 with a message on stderr, before anything runs or is written."""
import os
import subprocess
import sys

import pytest

from bench import cli, env as env_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def no_run(monkeypatch):
  """Fails the test if a run starts."""
  from bench import orchestrate

  def run(*args, **kwargs):
    raise AssertionError("orchestrate.run was called")
  monkeypatch.setattr(orchestrate, "run", run)


def _refused(argv, capsys) -> str:
  with pytest.raises(SystemExit) as err:
    cli.main(argv)
  assert err.value.code == 2
  return capsys.readouterr().err


@pytest.mark.parametrize("command", ["list", "run"])
@pytest.mark.parametrize("option, value, expected", [
    ("--modes", "fwd,bwd", "--modes must be a comma list of fwd, fwd+bwd; got 'bwd'"),
    ("--components", "foo",
     "--components must be a comma list of routing, pack, combine, experts, layer; got 'foo'"),
    ("--impls", "jax:dropless", "--impls 'jax:dropless' matches no implementation"),
    ("--configs", "nosuch", "--configs: unknown config or suite 'nosuch'; suites: "),
    ("--frameworks", "jax,tf", "--frameworks must be a comma list of torch, jax; got 'tf'"),
])
def test_bad_options_exit_2_naming_the_option(command, option, value, expected, capsys, tmp_path,
                                              no_run):
  argv = [command, "--configs", "tiny", option, value]
  if command == "run":
    argv += ["--quick", "--in-process", "--out", str(tmp_path / "out")]
  err = _refused(argv, capsys)
  assert err.startswith("moe-bench: error: " + expected), err
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("option, value, expected", [
    ("--iters", "5", "argument --iters: expected an integer >= 50 (the protocol's minimum; "
     "--quick is for tests), got 5"),
    ("--iters", "abc", "argument --iters: expected an integer, got 'abc'"),
    ("--warmup", "-1", "argument --warmup: expected an integer >= 0, got '-1'"),
    ("--rotate", "0", "argument --rotate: expected an integer >= 1, got '0'"),
    ("--target-sample-ms", "-5", "argument --target-sample-ms: expected a finite number > 0, "
     "got '-5'"),
    ("--settle-s", "-2", "argument --settle-s: expected a finite number >= 0, got '-2'"),
    ("--settle-s", "nan", "argument --settle-s: expected a finite number >= 0, got 'nan'"),
    ("--deadline", "-1", "argument --deadline: expected a finite number > 0, got '-1'"),
    ("--deadline", "0", "argument --deadline: expected a finite number > 0, got '0'"),
])
def test_bad_numbers_exit_2_naming_the_option(option, value, expected, capsys, tmp_path, no_run):
  err = _refused(["--configs", "tiny", "--in-process", "--out", str(tmp_path / "out"), option,
                  value], capsys)
  assert err.strip().splitlines()[-1] == "moe-bench: error: " + expected, err
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("command", ["run", "report"])
def test_an_unwritable_out_exits_2_before_running(command, capsys, tmp_path, no_run):
  blocker = tmp_path / "file"
  blocker.write_text("")  # a file where --out's parent directory should be
  out = str(blocker / "out")
  if command == "run":
    argv = ["--configs", "tiny", "--quick", "--in-process", "--out", out]
  else:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "results.jsonl").write_text('{"record": "env"}\n')
    argv = ["report", str(tmp_path / "in"), "--out", out, "--no-plots"]
  err = _refused(argv, capsys)
  prog = "moe-bench" if command == "run" else "moe-bench report"
  assert err.startswith(f"{prog}: error: --out {out}: cannot create the directory ("), err



def test_an_unknown_config_prints_no_traceback():
  out = subprocess.run([sys.executable, "-m", "bench.cli", "list", "--configs", "nosuch"],
                       capture_output=True, text=True, cwd=REPO, check=False,
                       env=dict(os.environ, PYTHONPATH=REPO))
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert "unknown config or suite 'nosuch'" in out.stderr and "cpu-mini" in out.stderr


def _fake_gpu(monkeypatch, backend, detail=""):
  monkeypatch.setattr(env_lib, "gpus", lambda: [dict(name="NVIDIA Fake 80GB", driver="999.1",
                                                     memory_bytes=80 << 30)])
  asked = []

  def jax_backend():
    asked.append(True)
    return backend, detail
  monkeypatch.setattr(env_lib, "jax_backend", jax_backend)
  monkeypatch.setattr(cli, "torch_peers", lambda: ())  # spares importing transformers
  return asked


def test_a_gpu_with_cpu_only_jax_stops_before_running(monkeypatch, capsys, tmp_path, no_run):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  note = "An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed."
  asked = _fake_gpu(monkeypatch, "cpu", note)
  out = tmp_path / "out"
  err = _refused(["--configs", "tiny", "--quick", "--out", str(out)], capsys)
  assert asked == [True]
  assert ("nvidia-smi reports a GPU (NVIDIA Fake 80GB) but jax.default_backend() is 'cpu', "
          "not 'gpu'") in err
  assert f"{sys.executable} -m pip install -e '{REPO}[cuda]'" in err
  assert err.rstrip().endswith("JAX said: " + note)
  assert not out.exists()


def test_a_gpu_whose_jax_does_not_answer_stops_too(monkeypatch, capsys, tmp_path, no_run):
  _fake_gpu(monkeypatch, None, "ModuleNotFoundError: No module named 'jax'")
  err = _refused(["--configs", "tiny", "--quick", "--out", str(tmp_path / "out")], capsys)
  assert "jax.default_backend() is unknown (JAX did not answer), not 'gpu'" in err


class _Started(Exception):
  pass


def _started(monkeypatch):
  from bench import orchestrate

  def run(*args, **kwargs):
    raise _Started
  monkeypatch.setattr(orchestrate, "run", run)


def test_a_gpu_with_gpu_jax_runs(monkeypatch, tmp_path):
  asked = _fake_gpu(monkeypatch, "gpu")
  _started(monkeypatch)
  with pytest.raises(_Started):
    cli.main(["--configs", "tiny", "--quick", "--out", str(tmp_path / "out")])
  assert asked == [True]


def test_a_torch_only_run_does_not_ask_jax(monkeypatch, tmp_path):
  asked = _fake_gpu(monkeypatch, "cpu")
  _started(monkeypatch)
  with pytest.raises(_Started):
    cli.main(["--configs", "tiny", "--quick", "--frameworks", "torch", "--out",
              str(tmp_path / "out")])
  assert not asked


def test_jax_backend_agrees_with_this_process():
  import jax
  backend, _ = env_lib.jax_backend()
  assert backend == jax.default_backend()


@pytest.mark.parametrize("layout", ["missing", "empty dir", "empty file"])
def test_report_without_records_exits_2_and_writes_nothing(layout, tmp_path, capsys):
  src = tmp_path / "src"
  if layout != "missing":
    src.mkdir()
  if layout == "empty file":
    (src / "results.jsonl").write_text("\n")
  out = tmp_path / "out"
  assert cli.main(["report", str(src), "--no-plots", "--out", str(out)]) == 2
  assert "moe-bench report: error: no records read from " + str(src) in capsys.readouterr().err
  assert not out.exists()
  assert cli.main(["report", str(src), "--no-plots"]) == 2  # --out defaults to the input
  if layout != "missing":
    assert sorted(os.listdir(src)) == (["results.jsonl"] if layout == "empty file" else [])
  else:
    assert not src.exists()
