#!/bin/bash
# Variant 45 as landed (repository root, GPU machine; writes under $OUT/final): the
# per-kernel A/B of the layer and the pack at HEAD (the session's start, fa54e27)
# against this tree, then the compiled tests of the row kernels, the GLU and the layer.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
mkdir -p "$OUT/final"
AB_TIMEOUT=180 bash bench/results/nvidia-h200/kernel-breakdown/ab.sh "$OUT/final" \
  gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd \
  gpt-oss-20b:pallas/binned:fwd routing-bench:pallas/binned:fwd:pack
timeout 330 python3 -m pytest -q -m gpu tests/kernels/test_launch_order.py \
  tests/kernels/test_glu.py tests/kernels/test_scatter.py tests/kernels/test_combine.py \
  tests/kernels/test_slot_dots.py tests/core/test_unused_rows.py tests/core/test_layer.py 2>&1 \
  | tee "$OUT/final/pytest-gpu.txt" | tail -3
