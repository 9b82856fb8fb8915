#!/bin/bash
# Not run yet (the session's device time ran out): does moe-bench's framework order move
# the gpt-oss-20b dropless forward+backward's ratio? Every run in this directory passed
# `--frameworks jax,torch` (JAX rows first). This runs the two rows three times in each
# order, alternating, one process per run (repository root, GPU machine; $OUT set;
# about 8 minutes), and prints each run's two wall times and ratio. SETTLE=3 passes
# `--settle-s 3` (both rows timed in their sustained state; about 1 minute more).
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
for i in 1 2 3; do
  for order in jax,torch torch,jax; do
    dir="$OUT/order-${order/,/-}-$i"
    timeout 140 python3 -m bench.cli --configs gpt-oss-20b --components layer --modes fwd+bwd \
      --impls jax:pallas/dropless,torch:grouped+compile --frameworks "$order" --settle-s "${SETTLE:-0}" --deadline 130 \
      --out "$dir" > "$dir.log" 2>&1
    echo "$order run $i rc=$?"
    grep "| layer .*fwd+bwd" "$dir/results.md" | cut -d'|' -f4,5,6,10,11,12
  done
done
