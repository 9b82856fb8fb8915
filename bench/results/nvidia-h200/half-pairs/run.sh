#!/bin/bash
# Variant 50 (run on 2026-12-05: slower, dropped; its outputs are beside this; repository root, GPU
# machine; $OUT set; about 7 minutes). The ping-pong gmm and gmm_glu compute a
# half-filled tile's upper 64 rows only, two column blocks per item, from a launch table
# that keeps the round robin even (`grouped_matmul.paired_items`). On main (variant 49
# measured slower and was dropped): applies variant50.patch unless it is in already,
# then ptxas's report (spills? C7512?), the probe, the compiled tests, and the per-kernel
# A/B of the layer (this tree less variant50.patch, then with it).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200
P=$D/half-pairs/variant50.patch
if git apply --check "$P" 2>/dev/null; then git apply "$P" && echo "applied $P"; fi
MOSAIC_GPU_DUMP_PTXAS=1 timeout 120 python3 -c "
import jax.numpy as jnp
from bench import gmm_probe
from moe_jax import kernels
x, w, b, g, f = gmm_probe.operands(4, 256, 384, 8, seed=1)
kernels.gmm_glu(x, w, b, g, f, activation='gpt_oss_glu', implementation='pallas', return_h=True)[0].block_until_ready()
kernels.gmm(x, w, g, tile_fill=f, implementation='pallas').block_until_ready()
kernels.gmm(x[:, :256], jnp.swapaxes(w, 1, 2), g, tile_fill=f, transpose_rhs=True, implementation='pallas').block_until_ready()
" > "$OUT/ptxas.txt" 2>&1
echo "ptxas rc=$? (${SECONDS} s)"; grep -i "C7512\|spill\|Used [0-9]* registers" "$OUT/ptxas.txt" | sort | uniq -c | head
timeout 150 python3 $D/half-pairs/probe.py "$OUT/probe.json" > "$OUT/probe.log" 2>&1
echo "probe rc=$? (${SECONDS} s)"; cut -c1-300 "$OUT/probe.log"
# the ping-pong kernels' compiled tests (the cooperative ones do not change)
PYTEST_K="not cooperative" bash $D/kernel-breakdown/tested_ab.sh "$P" 400 \
  tests/kernels/test_grouped_matmul_mgpu.py tests/kernels/test_gmm_glu.py \
  tests/core/test_layer.py || exit 1
echo "done (${SECONDS} s)"
