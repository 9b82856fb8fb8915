#!/bin/bash
# Variant 50's diagnosis (repository root, GPU machine; $OUT set; about 4 minutes): the
# SASS size of the layer's three ping-pong gmm kernels on this tree (`sass_count.sh`,
# $OUT/sass-base.txt), then applies variant50.patch (PATCH= names another, e.g.
# variant50b.patch) unless it is in already, the SASS size again ($OUT/sass-patch.txt),
# and `diag.py` (the gmm whole, through the item table with whole tiles only, and
# paired; $OUT/diag.json).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200/half-pairs
P=$D/${PATCH:-variant50.patch}
if git apply -R --check "$P" 2>/dev/null; then
  echo "$P is in already: no base SASS count"
else
  bash $D/sass_count.sh "$OUT/sass-base.txt"
  git apply "$P" && echo "applied $P" || exit 1
fi
bash $D/sass_count.sh "$OUT/sass-patch.txt"
timeout 150 python3 $D/diag.py "$OUT/diag.json" 2>&1 | tail -5
echo "diag rc=$? (${SECONDS} s)"
