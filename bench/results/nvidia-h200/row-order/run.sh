#!/bin/bash
# Variant 45's GPU run (repository root, GPU machine; writes under $OUT/row-order): the
# row kernels' launch orders (probe.py), then the per-kernel A/B of the layer at HEAD
# (the session's start, fa54e27) against this tree.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200/row-order
mkdir -p "$OUT/row-order"
timeout 200 python3 $D/probe.py "$OUT/row-order/probe.json" 2>&1 | cut -c1-160
AB_TIMEOUT=180 bash bench/results/nvidia-h200/kernel-breakdown/ab.sh "$OUT/row-order" \
  gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd \
  routing-bench:pallas/binned:fwd:pack
