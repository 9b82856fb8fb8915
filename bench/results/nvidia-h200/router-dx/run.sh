#!/bin/bash
# Variant 53 (repository root, GPU machine; $OUT set; about 4 minutes; ran on
# 2026-12-05 on the H100, kept and landed: results in nvidia-h100-80gb-hbm3/router-dx/):
# x's gradient in one kernel, the router's dlogits . W as the combine's matmul term
# (bench/NOTES.md, variant 53). The patch is against 5eb33ee (main has refactored the
# landed code since, so run it on a checkout of 5eb33ee). Applies variant53.patch;
# `probe.py` (the two kernels it replaces against the fused combine at two tiles,
# standalone); the compiled tests of
# the combine, the routed gather and the layer; then the per-kernel A/B of the
# gpt-oss-20b layer's dropless and binned forward+backward (base: the patch reverted).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200
P=$D/router-dx/variant53.patch
if git apply --check "$P" 2>/dev/null; then git apply "$P" && echo "applied $P"; fi
git apply -R --check "$P" 2>/dev/null || { echo "$P is not in this tree"; exit 1; }
timeout 90 python3 $D/router-dx/probe.py "$OUT/probe.json" > "$OUT/probe.log" 2>&1
echo "probe rc=$? (${SECONDS} s)"; tail -4 "$OUT/probe.log" | cut -c1-200
bash $D/kernel-breakdown/tested_ab.sh "$P" 240 \
  tests/kernels/test_combine.py tests/kernels/test_api.py tests/core/test_routed_gather.py \
  tests/core/test_layer.py || exit 1
echo "done (${SECONDS} s)"
