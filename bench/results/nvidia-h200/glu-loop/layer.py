"""Variant 37 in the layer: the per-kernel CUPTI breakdown (kernel-breakdown/breakdown.py)
with `api_glu.default_glu_config` patched to the given block (the probe's best).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/glu-loop/layer.py OUT.json BR BI WARPS STAGES ROW...
"""
import importlib.util
import sys

from moe_jax.kernels import BlockConfig
from moe_jax.kernels import api_glu

spec = importlib.util.spec_from_file_location(
    "breakdown", "bench/results/nvidia-h200/kernel-breakdown/breakdown.py")
breakdown = importlib.util.module_from_spec(spec)
spec.loader.exec_module(breakdown)
out, br, bi, warps, stages, *rows = sys.argv[1:]
breakdown.ROWS = [tuple(r.split(":")) for r in rows]
api_glu.default_glu_config = lambda tile_rows, num_i: BlockConfig(  # noqa: E731
    block_rows=int(br), block_h=int(bi), num_warps=int(warps), num_stages=int(stages))
breakdown.main(out)
