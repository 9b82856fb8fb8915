#!/bin/bash
# Variant 48 (repository root, GPU machine; writes under $OUT): the GLU kernels skip the
# loads and math of a block past its tile's fill. Per-kernel A/B of the layer at HEAD
# (c6c7770, a git archive) against this tree, then the compiled GLU, launch-order,
# unused-row and layer tests.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
AB_TIMEOUT=180 bash bench/results/nvidia-h200/kernel-breakdown/ab.sh "$OUT" \
  gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd
timeout 300 python3 -m pytest -q -m gpu tests/kernels/test_glu.py \
  tests/kernels/test_launch_order.py tests/core/test_unused_rows.py tests/core/test_tile_fill.py tests/core/test_layer.py 2>&1 \
  | tee "$OUT/pytest-gpu.txt" | tail -3
