#!/bin/bash
# Variant 51 (run on 2026-12-05 with BASE="": no gain, dropped; outputs beside this; repository root, GPU
# machine; $OUT set; about 4 minutes). The combine's bias gradients in the row kernels:
# slot_dots takes the bias rows, and group_sums replaces XLA's [E, T] x [T, H] products.
# Applies the patches named in $BASE (default: variants 49 and 50, each where it applies
# and is not in already; BASE="" for this tree alone), then variant 51's; then the
# probe, the compiled tests of the ops it touches, and the per-kernel A/B of the layer
# (the tree less variant 51's patch, then with it).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200
for p in ${BASE-$D/glu-deriv/variant49.patch $D/half-pairs/variant50.patch}; do
  if git apply --check "$p" 2>/dev/null; then git apply "$p" && echo "applied $p"; fi
done
# variant51.patch applies to main; variant51-after-49.patch where variant 49 is in.
for P in $D/bias-grads/variant51.patch $D/bias-grads/variant51-after-49.patch; do
  if git apply --check "$P" 2>/dev/null; then git apply "$P" && echo "applied $P" && break; fi
  if git apply -R --check "$P" 2>/dev/null; then echo "in already: $P" && break; fi
done
git apply -R --check "$P" 2>/dev/null || { echo "variant 51's patches do not apply here"; exit 1; }
timeout 150 python3 $D/bias-grads/probe.py "$OUT/probe.json" > "$OUT/probe.log" 2>&1
echo "probe rc=$? (${SECONDS} s)"; cut -c1-300 "$OUT/probe.log"
bash $D/kernel-breakdown/tested_ab.sh "$P" 300 tests/kernels/test_slot_dots.py \
  tests/kernels/test_group_sums.py tests/kernels/test_api.py \
  tests/core/test_binned_ops.py || exit 1
echo "done (${SECONDS} s)"
