#!/bin/bash
# Variant 44's checks before row_band="expert" became the default (bench/NOTES.md,
# variant 44, "Next"): its compiled tests, then gmm_glu and the gpt-oss-20b dropless
# forward+backward under band 4 and "expert" in one process (output SHA-1s, sustained J
# and ms per call, cool ms per call). Repository root, GPU machine; writes under $OUT.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
python3 -m pytest -q -m gpu -k expert tests/kernels/test_grouped_matmul_mgpu.py \
  tests/kernels/test_gmm_glu.py 2>&1 | tee "$OUT/pytest-expert.txt" | tail -3
PROBE_BANDS=4,expert python3 bench/results/nvidia-h200/energy/bands.py "$OUT/expert-landed.json" \
  2>&1 | grep "^{'case'" | cut -c1-250
