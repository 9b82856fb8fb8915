#!/bin/bash
# Variant 50b (repository root, GPU machine; $OUT set; about 6 minutes). Ran on 2026-12-05
# on the H100: +26% of the layer's kernels, dropped (nvidia-h100-80gb-hbm3/half-pairs-50b/).
# Variant 50 with one epilogue for every item kind: under the paired launch order every
# item accumulates in two 64-row accumulators (a whole tile's two halves, or a pair's
# two column blocks), so the epilogue's code is compiled once, as on main, where
# variant 50 compiled it twice (the suspect for its +16-37%). Applies variant50b.patch,
# then ptxas's report, the compiled tests and the per-kernel A/B of the layer (this
# tree, then with the patch): about 5.5 minutes as variant 50's parts took. Its
# diagnosis (SASS sizes, `diag.py`) is a call of its own:
# `PATCH=variant50b.patch bash bench/results/nvidia-h200/half-pairs/diag.sh`.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
D=bench/results/nvidia-h200
P=$D/half-pairs/variant50b.patch
if git apply --check "$P" 2>/dev/null; then git apply "$P" && echo "applied $P"; fi
git apply -R --check "$P" 2>/dev/null || { echo "$P is not in this tree"; exit 1; }
MOSAIC_GPU_DUMP_PTXAS=1 timeout 90 python3 -c "
import jax.numpy as jnp
from bench import gmm_probe
from moe_jax import kernels
x, w, b, g, f = gmm_probe.operands(4, 256, 384, 8, seed=1)
# the layer's calls: zero_unused=False, and the dx gmm's transposed weights
kernels.gmm_glu(x, w, b, g, f, activation='gpt_oss_glu', implementation='pallas', return_h=True, zero_unused=False)[0].block_until_ready()
kernels.gmm(x, w, g, tile_fill=f, implementation='pallas', zero_unused=False).block_until_ready()
kernels.gmm(x[:, :256], jnp.swapaxes(w, 1, 2), g, tile_fill=f, transpose_rhs=True, implementation='pallas', zero_unused=False).block_until_ready()
" > "$OUT/ptxas.txt" 2>&1
echo "ptxas rc=$? (${SECONDS} s)"; grep -i "C75\|spill\|Used [0-9]* registers" "$OUT/ptxas.txt" | cut -c1-150 | sort | uniq -c | head
PYTEST_K="not cooperative" bash $D/kernel-breakdown/tested_ab.sh "$P" 300 \
  tests/kernels/test_grouped_matmul_mgpu.py tests/kernels/test_gmm_glu.py \
  tests/core/test_layer.py || exit 1
echo "done (${SECONDS} s)"
