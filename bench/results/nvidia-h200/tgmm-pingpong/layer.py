"""Variant 32 in the layer: per-kernel CUPTI breakdowns (kernel-breakdown/breakdown.py)
of gpt-oss-20b's forward+backward, first with the default tgmm config, then with
`api._mosaic_config` patched to give tgmm the ping-pong schedule at `BLOCK`.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/tgmm-pingpong/layer.py OUT_PREFIX BK BN STAGES ROW...
"""
import importlib.util
import sys

from moe_jax.kernels import MatmulConfig
from moe_jax.kernels import api

spec = importlib.util.spec_from_file_location(
    "breakdown", "bench/results/nvidia-h200/kernel-breakdown/breakdown.py")
breakdown = importlib.util.module_from_spec(spec)
spec.loader.exec_module(breakdown)
prefix, bk, bn, stages, *rows = sys.argv[1:]
breakdown.ROWS = [tuple(r.split(":")) for r in rows]
breakdown.main(prefix + "-base.json")
base = api._mosaic_config


def patched(tile_rows, k, n, dtype, *, transposed, row_band):
  config = base(tile_rows, k, n, dtype, transposed=transposed, row_band=row_band)
  if transposed and config is not None:
    config = MatmulConfig(block_k=int(bk), block_n=int(bn), num_stages=int(stages),
                          backend="mosaic", schedule="pingpong")
  return config


api._mosaic_config = patched
breakdown.main(prefix + "-pingpong.json")
