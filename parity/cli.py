"""`moe-parity`: stage-by-stage numerical parity of moe_jax against the PyTorch references.

Runs the catalogue (parity/cases.py), prints one table row per case x precision x
(JAX implementation, reference) x stage, writes the same as JSON and markdown, and
exits 1 if any stage fails or errors (0 otherwise; 2 for bad arguments).

Examples:
  moe-parity                                   # small cases on CPU, full on GPU
  moe-parity --cases notebook ties --small
  moe-parity --full --default-precision --out parity/results
  moe-parity --cases ties --inject tie_break   # test hook: must fail expert_indices
"""
from __future__ import annotations

import os

# JAX must not take 75% of the GPU up front: the torch references share the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# pylint: disable=wrong-import-position
import argparse
import pathlib
import sys
import tempfile

import jax

import moe_torch_ref
from parity import cases as cases_lib
from parity import report, run
from parity.jax_side import INJECTIONS

ALL_REFERENCES = ("binned_loop", "binned", "gpt_oss_dense", "gpt_oss_loop", "grouped",
                  "transformers")
DEFAULT_OUT = "build/parity"


def _on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="moe-parity", description=__doc__.split("\n\n")[1],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Catalogue: " + ", ".join(cases_lib.NAMES))
  p.add_argument("--cases", nargs="+", metavar="NAME", choices=cases_lib.NAMES,
                 help="subset of the catalogue (default: all)")
  size = p.add_mutually_exclusive_group()
  size.add_argument("--small", dest="small", action="store_true", default=None,
                    help="the small variant of each case (default without a GPU)")
  size.add_argument("--full", dest="small", action="store_false",
                    help="the full-size cases (default on a GPU)")
  p.add_argument("--implementations", nargs="+", metavar="NAME", choices=ALL_REFERENCES,
                 default=None, help="PyTorch references to compare with (default: all "
                 f"installed: {', '.join(moe_torch_ref.IMPLEMENTATIONS)})")
  p.add_argument("--jax-impl", choices=("xla", "pallas", "both"), default=None,
                 help="JAX gather/combine implementation (default: both on GPU, xla on CPU; "
                      "pallas runs interpreted on CPU)")
  p.add_argument("--default-precision", action="store_true",
                 help="also run fp32 cases at each framework's default precision (JAX may "
                      "use TF32 on GPU); reported as separate rows, precision=default")
  p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                 help=f"directory for parity-<mode>-<device>.json and .md (default {DEFAULT_OUT})")
  p.add_argument("--failures-only", action="store_true",
                 help="print only failing rows in the terminal table (files hold every row)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--list", action="store_true", help="print the catalogue and exit")
  p.add_argument("--inject", choices=INJECTIONS, default=None,
                 help="TEST HOOK: perturb the JAX side of one stage (glu_alpha: GLU alpha=1.0; "
                      "drop_bias: no expert down bias; tie_break: ties to the higher index) so "
                      "that the run must fail and name that stage")
  return p


def _list_catalogue() -> str:
  from tabulate import tabulate  # pylint: disable=import-outside-toplevel
  rows = []
  for case in cases_lib.CATALOGUE:
    small = case.small_variant()
    d = case.describe()
    rows.append([case.name, f"{d['T']}/{small.tokens}", f"{d['H']}/{small.hidden}",
                 f"{d['I']}/{small.intermediate}", d["E"], d["K"], d["capacity_factor"],
                 d["dtype"], d["scheme"], d["router"], d["activation"], d["stages"]])
  return tabulate(rows, headers=["case", "T full/small", "H", "I", "E", "K", "capacity", "dtype",
                                 "init", "router", "activation", "stages"], disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
  """Runs the parity suite; returns the exit code (0 all pass, 1 any failure, 2 usage)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _parser()
  args = parser.parse_args(argv)
  if args.list:
    print(_list_catalogue())
    return 0
  try:  # before any case runs: a report that cannot be written would lose the run
    os.makedirs(args.out, exist_ok=True)
    writable = os.access(args.out, os.W_OK | os.X_OK)
  except OSError as err:
    parser.error(f"--out {args.out}: cannot create the directory ({err.strerror})")
  if not writable:
    parser.error(f"--out {args.out}: the directory is not writable")
  small = (not _on_gpu()) if args.small is None else args.small
  jax_impl = args.jax_impl or ("both" if _on_gpu() else "xla")
  jax_impls = ["xla", "pallas"] if jax_impl == "both" else [jax_impl]
  references = args.implementations or list(moe_torch_ref.IMPLEMENTATIONS)
  selected = cases_lib.select(args.cases, small=small)
  mode = "small" if small else "full"
  env = report.environment(report.python_command(argv), mode)

  progress = None
  if not args.no_progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    modes = sum(len(run.precision_modes(c, args.default_precision)) for c in selected)
    progress = tqdm(total=modes * len(references), desc="moe-parity", unit="ref", file=sys.stderr,
                    leave=False)
  results = []
  with tempfile.TemporaryDirectory(prefix="moe-parity-") as tmp:
    for number, case in enumerate(selected, 1):
      if progress is not None:
        progress.set_postfix_str(case.name)
      results.append(run.run_case(
          case, torch_impls=references, jax_impls=jax_impls,
          default_precision=args.default_precision, inject=args.inject,
          workdir=pathlib.Path(tmp),
          on_step=(lambda _label: progress.update(1)) if progress is not None else None))
      # Rewritten after every case, so a run cut short still leaves its finished cases.
      report.write(results, {**env, "complete": number == len(selected)}, args.out)
      if progress is None:
        res = results[-1]
        failed = sum(r.failed for r in res.rows)
        print(f"[{number}/{len(selected)}] {case.name}: {res.seconds:.1f} s, "
              f"{failed} failing rows", file=sys.stderr, flush=True)
  if progress is not None:
    progress.close()

  env["complete"] = True
  print(report.terminal(results, env, failures_only=args.failures_only))
  json_path, md_path = report.write(results, env, args.out)
  print(f"wrote {json_path} and {md_path}")
  return 0 if report.summary([r for res in results for r in res.rows])["passed"] else 1


if __name__ == "__main__":
  sys.exit(main())
