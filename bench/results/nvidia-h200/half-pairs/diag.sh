#!/bin/bash
# Variant 50's diagnosis (repository root, GPU machine; $OUT set; about 2 minutes):
# applies variant50.patch (PATCH= names another, e.g. variant50b.patch) unless it is in
# already, then `diag.py` (the gmm whole, through the item table with whole tiles only,
# and paired).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200/half-pairs
P=$D/${PATCH:-variant50.patch}
if git apply --check "$P" 2>/dev/null; then git apply "$P" && echo "applied $P"; fi
git apply -R --check "$P" 2>/dev/null || { echo "$P is not in this tree"; exit 1; }
timeout 240 python3 $D/diag.py "$OUT/diag.json" 2>&1 | tail -5
echo "diag rc=$?"
