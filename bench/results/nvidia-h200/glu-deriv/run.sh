#!/bin/bash
# Variant 49 (run on 2026-12-05: slower, dropped; its outputs are beside this; repository root, GPU
# machine; $OUT set; about 7 minutes). The training forward's gmm_glu writes the GLU's
# derivatives instead of h, and the backward's tile_glu_vjp multiplies them by g.
# Applies variant49.patch to this tree unless it is in already, then: ptxas's report of
# the ping-pong gmm_glu with the derivatives (spills? C7512?), the probe, the compiled
# tests, and the per-kernel A/B of the layer (this tree less the patch, then with it).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200
P=$D/glu-deriv/variant49.patch
if git apply --check "$P" 2>/dev/null; then git apply "$P" && echo "applied $P"; fi
MOSAIC_GPU_DUMP_PTXAS=1 timeout 120 python3 -c "
from bench import gmm_probe
from moe_jax import kernels
x, w, b, g, f = gmm_probe.operands(4, 256, 384, 8, seed=1)
kernels.gmm_glu(x, w, b, g, f, activation='gpt_oss_glu', implementation='pallas', return_deriv=True)[0].block_until_ready()
" > "$OUT/ptxas.txt" 2>&1
echo "ptxas rc=$? (${SECONDS} s)"; grep -i "C7512\|spill\|Used [0-9]* registers" "$OUT/ptxas.txt" | sort | uniq -c | head
timeout 150 python3 $D/glu-deriv/probe.py "$OUT/probe.json" > "$OUT/probe.log" 2>&1
echo "probe rc=$? (${SECONDS} s)"; cat "$OUT/probe.log" | cut -c1-300
bash $D/kernel-breakdown/tested_ab.sh "$P" 420 tests/kernels/test_glu.py \
  tests/kernels/test_gmm_glu.py tests/kernels/test_launch_order.py tests/core/test_layer.py \
  tests/kernels/test_api.py || exit 1
echo "done (${SECONDS} s)"
