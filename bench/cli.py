"""`moe-bench`: JAX vs PyTorch MoE benchmarks, side by side.

  moe-bench [run] [--configs SUITE|NAME|GLOB,...] [--components ...] [--impls GLOB,...]
                  [--iters 50] [--warmup 10] [--out DIR] [--append] [--deadline S]
  moe-bench report DIR [DIR ...] [--out DIR]     # merge runs into one report
  moe-bench list [--configs ...]                 # configs and planned rows, no run

Without a GPU the default is the small CPU suite (`cpu-small`, about two minutes on 2 cores);
with one it is `full`. Each run writes results.jsonl (data first), results.md (tables),
PNG plots, COMMAND.txt and README.md into --out (default bench/results/<device>/),
and prints the side-by-side table.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from bench import configs, env as env_lib, report
from bench.plan import FRAMEWORKS, plan, torch_peers, validate
from bench.timing import MIN_ITERS, Protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _csv(value: str | None) -> list[str] | None:
  # Deduplicated (first occurrence wins): "fwd,fwd" must not plan every row twice.
  items = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip())) if value else []
  return items or None


def _usage_error(message: str, prog: str = "moe-bench") -> SystemExit:
  """A bad option: the message on stderr and exit status 2, argparse's, with no traceback."""
  print(f"{prog}: error: {message}", file=sys.stderr)
  return SystemExit(2)


def _number(kind, *, least: float, strict: bool = False):
  """An argparse type: a finite `kind` >= least (> least when `strict`); a bad value
  gets argparse's error naming the option, with exit status 2."""
  def parse(text: str):
    what = "an integer" if kind is int else "a finite number"
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < least or (strict and value == least):
      raise argparse.ArgumentTypeError(
          f"expected {what} {'>' if strict else '>='} {least:g}, got {text!r}")
    return value
  return parse


def _writable_dir(given: str | None, default: str, prog: str = "moe-bench") -> str:
  """The output directory (--out, else `default`), created if needed and checked
  writable before any work is done."""
  path = given or default
  name = f"--out {path}" if given else f"the output directory {path} (--out's default)"
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as err:
    raise _usage_error(f"{name}: cannot create the directory ({err.strerror})", prog) from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise _usage_error(f"{name}: the directory is not writable", prog)
  return path


def _run_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="moe-bench", description=__doc__,
                              usage="moe-bench [run | list] [options]  (or: moe-bench report "
                                    "DIR [DIR ...] [--out DIR])",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", "--suite", dest="configs", default=None,
                 help=f"suites {sorted(configs.SUITES)}, config names or globs, comma separated "
                      "(default: cpu-small without a GPU, full with one)")
  p.add_argument("--components", default=None,
                 help=f"override the configs' components: {','.join(configs.COMPONENTS)}")
  p.add_argument("--modes", default=None, help="override the modes: fwd,fwd+bwd")
  p.add_argument("--impls", default=None,
                 help="globs over framework:impl, e.g. 'jax:*,torch:grouped*' (also lifts the "
                      "CPU-only skips of Pallas and torch.compile)")
  p.add_argument("--frameworks", default="torch,jax",
                 help="frameworks to run, in this order (e.g. jax,torch runs JAX first)")
  p.add_argument("--iters", type=_number(int, least=1), default=MIN_ITERS,
                 help=f"timed samples (>= {MIN_ITERS})")
  default = Protocol()
  p.add_argument("--warmup", type=_number(int, least=0), default=default.warmup,
                 help="synced calls before the samples; their median is the latency column")
  p.add_argument("--rotate", type=_number(int, least=1), default=default.rotate,
                 help="rotated input sets")
  p.add_argument("--target-sample-ms", type=_number(float, least=0, strict=True),
                 default=default.target_sample_ms,
                 help="back-to-back call time per sample; it sets the calls per sample")
  p.add_argument("--settle-s", type=_number(float, least=0), default=default.settle_s,
                 help="seconds each row runs back to back, untimed, before its samples, "
                      "so that they see a power-capped GPU's sustained clock (0: none)")
  p.add_argument("--quick", action="store_true",
                 help="tests only: 5 samples, 1 warm-up; rows are labelled quick")
  p.add_argument("--out", default=None, help="results directory (default bench/results/<device>)")
  p.add_argument("--append", action="store_true",
                 help="append to --out's results.jsonl; the report covers all runs in it")
  isolation = p.add_mutually_exclusive_group()
  isolation.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                         help="one process per config and framework (default with a GPU)")
  isolation.add_argument("--in-process", dest="isolate", action="store_false")
  p.add_argument("--deadline", type=_number(float, least=0, strict=True), default=None,
                 help="seconds; rows not started by then are written as skipped")
  p.add_argument("--keep-scratch", action="store_true", help="keep the parity arrays")
  p.add_argument("--no-plots", action="store_true")
  return p


def _plan(args, environment: dict):
  spec = args.configs or ("full" if environment["gpu"] else "cpu-small")
  if args.quick and not args.configs:
    spec = "quick"
  frameworks = _csv(args.frameworks) or list(FRAMEWORKS)
  try:
    cfgs = configs.select(spec)
  except ValueError as err:  # select() names the config that arrived, and every valid one
    message = str(err)
    raise _usage_error(message if message.startswith("--") else f"--configs: {message}") from None
  options = dict(frameworks=frameworks, components=_csv(args.components),
                 modes=_csv(args.modes))
  try:
    validate(cfgs, **options, impls=None)
    # torch_peers() imports transformers, so it runs once the cheap checks passed; the
    # globs need it, as they may name a peer.
    peers = torch_peers() if "torch" in frameworks else ()
    cases = plan(cfgs, **options, impls=_csv(args.impls), gpu=environment["gpu"],
                 memory_bytes=environment["device_memory_bytes"], peers=peers)
  except ValueError as err:  # validate() names the option, the valid values and what arrived
    raise _usage_error(str(err)) from None
  return cfgs, cases


def _check_jax_backend(environment: dict, frameworks: Sequence[str]) -> None:
  """Stops a GPU plan whose JAX would run on the CPU.

  The plan follows nvidia-smi (the full suite, GPU-sized configs), but JAX runs on the
  CPU when only its CPU build is installed: the run would take hours and time the wrong
  device. Asked in a subprocess (env.jax_backend) so that this process never holds the GPU.
  """
  if not environment["gpu"] or "jax" not in frameworks:
    return
  backend, detail = env_lib.jax_backend()
  if backend == "gpu":
    return
  found = repr(backend) if backend else "unknown (JAX did not answer)"
  jax_version = environment["versions"].get("jax", "not installed")
  forced = os.environ.get("JAX_PLATFORMS")
  message = (f"nvidia-smi reports a GPU ({environment['device']}) but jax.default_backend() is "
             f"{found}, not 'gpu' (jax {jax_version}"
             + (f", JAX_PLATFORMS={forced!r}" if forced else "")
             + "), so this GPU plan would run JAX on the CPU. Install JAX's CUDA build, the "
             f"cuda extra: `{sys.executable} -m pip install -e '{REPO}[cuda]'` (or "
             "`make clean venv`, which adds it where nvidia-smi is on PATH); "
             "or time PyTorch alone with --frameworks torch.")
  raise _usage_error(message + (f"\nJAX said: {detail}" if detail else ""))


def write_report(records: Sequence[dict], out_dir: str, *, plots: bool) -> str:
  """Writes results.md, the plots, COMMAND.txt and README.md; returns the side-by-side table."""
  from bench import plots as plots_lib  # pylint: disable=import-outside-toplevel
  envs, _, rows = report.merge(records)
  paths = plots_lib.all_plots(rows, out_dir) if plots else []
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(report.markdown(records, paths))
  with open(os.path.join(out_dir, "COMMAND.txt"), "w") as f:
    for e in envs:
      f.write(f"run {e['run_id']}  {e['date']}\n  device: {e['device']}  driver: {e['driver']}\n"
              f"  command: {e['command']}\n  python: {e.get('python_executable')}\n"
              f"  versions: {e.get('versions')}\n\n")
  device = envs[-1]["device"] if envs else "?"
  links = " · ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})" for p in paths)
  with open(os.path.join(out_dir, "README.md"), "w") as f:
    f.write(f"# moe-bench on {device}\n\nThe whole layer, fastest parity-checked implementation "
            f"of each framework (full tables: [results.md](results.md); data: "
            f"[results.jsonl](results.jsonl); commands: [COMMAND.txt](COMMAND.txt)).\n\n"
            f"{report.headline(records)}\n\n" + "\n".join(f"- {n}" for n in report.NOTES)
            + (f"\n\nPlots: {links}\n" if links else "\n"))
  return report.side_by_side(rows)


def _progress(total: int):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=total, unit="row", dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

  def on_record(rec: dict) -> None:
    if rec.get("record") == "start":
      c, comp, mode, fw, impl = rec["key"]
      bar.set_postfix_str(f"{c} {fw}:{impl} {comp} {mode}", refresh=False)
    elif rec.get("record") == "row":
      bar.update(1)
  return bar, on_record


def run_main(argv: Sequence[str]) -> int:
  args = _run_parser().parse_args(argv)
  if not args.quick and args.iters < MIN_ITERS:
    raise _usage_error(f"argument --iters: expected an integer >= {MIN_ITERS} (the protocol's "
                       f"minimum; --quick is for tests), got {args.iters}")
  try:
    if args.quick:
      protocol = Protocol(warmup=1, iters=5, rotate=2, target_sample_ms=0.5,
                          settle_s=args.settle_s, quick=True)
    else:
      protocol = Protocol(warmup=args.warmup, iters=args.iters, rotate=args.rotate,
                          target_sample_ms=args.target_sample_ms, settle_s=args.settle_s)
  except ValueError as err:
    raise _usage_error(str(err)) from None
  environment = env_lib.collect(list(argv))
  _, cases = _plan(args, environment)
  _check_jax_backend(environment, {case.framework for case in cases})
  out_dir = _writable_dir(
      args.out, os.path.join(REPO, "bench", "results", env_lib.slug(environment["device"])))
  isolate = environment["gpu"] if args.isolate is None else args.isolate
  from bench import orchestrate  # pylint: disable=import-outside-toplevel
  bar, on_record = _progress(len(cases))
  try:
    orchestrate.run(cases, env=environment, protocol=protocol, out_dir=out_dir, isolate=isolate,
                    deadline_s=args.deadline, keep_scratch=args.keep_scratch, append=args.append,
                    on_record=on_record)
  finally:
    bar.close()
  records = report.read([out_dir])
  table = write_report(records, out_dir, plots=not args.no_plots)
  print(f"\nmoe-bench on {environment['device']} -> {out_dir}\n")
  print(table)
  print()
  for note in report.NOTES:
    print(f"- {note}")
  if not environment["gpu"]:
    print("- kernel times: n/a on a CPU (no CUPTI); Pallas and torch.compile rows are skipped "
          "on a CPU (see results.md for every row and reason).")
  return 0


def report_main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(prog="moe-bench report",
                              description="Merge results.jsonl files into one report.")
  p.add_argument("inputs", nargs="+", help="results directories or results.jsonl files")
  p.add_argument("--out", default=None, help="output directory (default: the first input)")
  p.add_argument("--no-plots", action="store_true")
  args = p.parse_args(argv)
  records = report.read(args.inputs)
  if not records:  # an empty report over empty files would look like a run with no rows
    print(f"moe-bench report: error: no records read from {' '.join(args.inputs)} (each input "
          "must be a results.jsonl or a directory holding one, not empty); nothing written",
          file=sys.stderr)
    return 2
  first = args.inputs[0]
  out_dir = _writable_dir(args.out, first if os.path.isdir(first) else os.path.dirname(first)
                          or ".", prog="moe-bench report")
  merged_path = os.path.join(out_dir, "results.jsonl")
  sources = {os.path.abspath(i if not os.path.isdir(i) else os.path.join(i, "results.jsonl"))
             for i in args.inputs}
  if os.path.abspath(merged_path) not in sources or len(sources) > 1:
    import json  # pylint: disable=import-outside-toplevel
    with open(merged_path, "w") as f:
      for rec in records:
        f.write(json.dumps(rec) + "\n")
  print(write_report(records, out_dir, plots=not args.no_plots))
  return 0


def list_main(argv: Sequence[str]) -> int:
  args = _run_parser().parse_args(argv)
  environment = env_lib.collect(list(argv))
  cfgs, cases = _plan(args, environment)
  for c in cfgs:
    n = sum(1 for k in cases if k.config == c.name)
    print(f"{c.name:22s} {c.describe():48s} rows={n}  {c.note}")
  for k in cases:
    print("  " + " ".join(k.key) + (f"   [skipped: {k.skip}]" if k.skip else ""))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Console entry point (`moe-bench`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "report":
    return report_main(argv[1:])
  if argv and argv[0] == "list":
    return list_main(argv[1:])
  if argv and argv[0] == "run":
    argv = argv[1:]
  return run_main(argv)


if __name__ == "__main__":
  sys.exit(main())
