# The end of a variant's run.sh (repository root, GPU machine; $OUT set): the compiled
# tests given, then, only if they pass, the per-kernel A/B of the gpt-oss-20b layer's
# dropless and binned forward+backward with PATCH reverted for the base:
#   bash bench/results/nvidia-h200/kernel-breakdown/tested_ab.sh PATCH TIMEOUT_S TEST ...
# PYTEST_K, if set, is passed to pytest's -k. Writes $OUT/pytest-gpu.txt and ab.sh's files.
P=$1 LIMIT=$2; shift 2
timeout "$LIMIT" python3 -m pytest -q -m gpu ${PYTEST_K:+-k "$PYTEST_K"} "$@" \
  > "$OUT/pytest-gpu.txt" 2>&1
rc=$?; echo "pytest rc=$rc (${SECONDS} s of tests)"; tail -3 "$OUT/pytest-gpu.txt"
if [ $rc -ne 0 ]; then echo "compiled tests failed: no A/B (see pytest-gpu.txt)"; exit 1; fi
AB_REVERT=$P AB_TIMEOUT=180 bash bench/results/nvidia-h200/kernel-breakdown/ab.sh "$OUT" \
  gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd
