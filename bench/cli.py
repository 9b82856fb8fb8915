"""`moe-bench`: for now, a smoke comparison of the PyTorch implementations.

For each implementation: the max abs difference of y to binned_loop and the median wall time of a
forward pass (no grad) over a few repeats, on one small config. A placeholder for
the real benchmark protocol (see docs), kept quick enough to run anywhere.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import moe_torch_ref as mtr
from moe_torch_ref import weights


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="moe-bench",
      description="Smoke comparison of the PyTorch MoE implementations: max abs difference "
                  "to binned_loop and median forward time.")
  p.add_argument("--experts", "-E", type=int, default=8, help="E (default 8)")
  p.add_argument("--hidden", "-H", type=int, default=128, help="H (default 128)")
  p.add_argument("--intermediate", "-I", type=int, default=128, help="I (default 128)")
  p.add_argument("--top-k", "-K", type=int, default=2, help="K (default 2)")
  p.add_argument("--tokens", "-T", type=int, default=64, help="T (default 64)")
  p.add_argument("--dtype", choices=sorted(weights.DTYPES), default="float32")
  p.add_argument("--scheme", choices=weights.SCHEMES, default="nonzero-bias")
  p.add_argument("--device", default="cpu", help="torch device (default cpu)")
  p.add_argument("--repeats", type=int, default=10, help="timed runs per implementation")
  p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
  p.add_argument("--implementations", nargs="+", choices=mtr.IMPLEMENTATIONS,
                 default=list(mtr.IMPLEMENTATIONS), metavar="NAME",
                 help=f"subset of {', '.join(mtr.IMPLEMENTATIONS)}")
  return p


def _time(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize(device)
  for _ in range(warmup):
    fn()
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - start)
  return times


def _table(rows: list[list], headers: list[str]) -> str:
  try:
    import tabulate  # pylint: disable=import-outside-toplevel
    return tabulate.tabulate(rows, headers=headers, tablefmt="github")
  except ImportError:
    lines = ["  ".join(f"{h:>16}" for h in headers)]
    lines += ["  ".join(f"{c:>16}" for c in row) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Runs the smoke comparison and prints a table; returns 0."""
  args = _parser().parse_args(argv)
  cfg = weights.WeightConfig(num_experts=args.experts, top_k=args.top_k,
                             hidden_size=args.hidden, intermediate_size=args.intermediate,
                             dtype=args.dtype)
  device = torch.device(args.device)
  sd = {n: t.to(device) for n, t in weights.generate(cfg, args.scheme).items()}
  gen = torch.Generator().manual_seed(123)
  x = torch.randn(args.tokens, args.hidden, generator=gen).to(device=device, dtype=cfg.torch_dtype)
  with torch.no_grad():
    ref, _ = mtr.create("binned_loop", sd, top_k=args.top_k)(x)
    rows = []
    for name in args.implementations:
      module = mtr.create(name, sd, top_k=args.top_k)
      y, _ = module(x)
      times = _time(lambda m=module: m(x), device, args.warmup, args.repeats)
      diff = (y.float() - ref.float()).abs().max().item()
      rows.append([name, f"{diff:.2e}", f"{statistics.median(times) * 1e3:.3f}",
                   f"{min(times) * 1e3:.3f}"])
  print(f"moe-bench smoke: {cfg.describe()} T={args.tokens} scheme={args.scheme} "
        f"device={device} torch={torch.__version__} repeats={args.repeats}")
  print(_table(rows, ["implementation", "max abs diff vs binned_loop", "median ms", "min ms"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
