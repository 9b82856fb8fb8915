"""Manual check (not collected by pytest): the notebook-sized config E=128, K=4,
H=1152, I=1152 can be generated, saved, reloaded bit-exactly and run.

  .venv/bin/python -m tests.torch_ref.check_big_weights [--dtype float32|bfloat16] [--dir D]

Writes ~2 GB (float32) into a temporary directory and deletes it afterwards.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import torch

import moe_torch_ref as mtr
from moe_torch_ref import weights


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dtype", choices=sorted(weights.DTYPES), default="float32")
  p.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
  args = p.parse_args(argv)
  cfg = weights.WeightConfig(num_experts=128, top_k=4, hidden_size=1152, intermediate_size=1152,
                             dtype=args.dtype)
  with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
    path = pathlib.Path(tmp) / "big.safetensors"
    t0 = time.perf_counter()
    sd = weights.generate(cfg, "nonzero-bias")
    t1 = time.perf_counter()
    weights.save(path, sd, cfg)
    t2 = time.perf_counter()
    loaded, loaded_cfg = weights.load(path)
    t3 = time.perf_counter()
    assert loaded_cfg == cfg
    int_dtype = {torch.float32: torch.int32, torch.bfloat16: torch.int16}[cfg.torch_dtype]
    for name in weights.NAMES:
      assert torch.equal(loaded[name].view(int_dtype), sd[name].view(int_dtype)), name
    size = path.stat().st_size
    x = torch.randn(100, cfg.hidden_size, generator=torch.Generator().manual_seed(123))
    x = (x * 0.1).to(cfg.torch_dtype)
    with torch.no_grad():
      y_ref, _ = mtr.create("binned", loaded, top_k=4)(x)
      y, _ = mtr.create("grouped", loaded, top_k=4)(x)
    diff = (y.float() - y_ref.float()).abs().max().item()
  print(f"{cfg.describe()}: file {size / 2**30:.2f} GiB; generate {t1 - t0:.1f}s, "
        f"save {t2 - t1:.1f}s, load+validate {t3 - t2:.1f}s; bit-exact round trip OK; "
        f"grouped vs binned (T=100) max abs diff {diff:.2e}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
