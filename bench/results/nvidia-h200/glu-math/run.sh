#!/bin/bash
# Variant 46 (repository root, GPU machine; writes under $OUT/glu-math): the per-kernel
# A/B of the layer, this tree less variant46.patch then this tree, and the compiled GLU,
# launch-order and layer tests.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
mkdir -p "$OUT/glu-math"
AB_REVERT=bench/results/nvidia-h200/glu-math/variant46.patch AB_TIMEOUT=170 \
  bash bench/results/nvidia-h200/kernel-breakdown/ab.sh "$OUT/glu-math" \
  gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd
timeout 200 python3 -m pytest -q -m gpu tests/kernels/test_glu.py \
  tests/kernels/test_launch_order.py tests/core/test_layer.py 2>&1 \
  | tee "$OUT/glu-math/pytest-gpu.txt" | tail -3
