#!/bin/bash
# Variant 50's diagnosis (repository root, GPU machine; $OUT set; about 2 minutes):
# applies variant50.patch unless it is in already, then `diag.py` (the gmm whole,
# through the item table with whole tiles only, and paired).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200/half-pairs
if git apply --check $D/variant50.patch 2>/dev/null; then git apply $D/variant50.patch; fi
timeout 240 python3 $D/diag.py "$OUT/diag.json" 2>&1 | tail -5
