# Variant 41 as landed (the XLA prefix for expert_ranks above RANKS_SCAN_ABOVE), on the
# GPU machine from the repository root: the compiled rank tests, a per-kernel A/B of the
# routing-bench pack (this tree against it with variant41.patch reverted), then the pack
# and combine rows of both frameworks under moe-bench.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200/block-prefix
d=$OUT/w; mkdir -p $d
timeout 150 python3 -m pytest -q -m gpu tests/kernels/test_ranks.py tests/kernels/test_layout.py tests/core/test_dispatch.py > $d/pytest-gpu.txt 2>&1; echo pytest rc=$?; tail -2 $d/pytest-gpu.txt
AB_REVERT=$D/variant41.patch bash bench/results/nvidia-h200/kernel-breakdown/ab.sh $d routing-bench:pallas/binned:fwd:pack
timeout 150 python3 -m bench.cli --configs routing-bench --components pack,combine --modes fwd --impls jax:pallas/binned,jax:xla/binned,torch:dropless,torch:binned --frameworks jax,torch --deadline 140 --out $d/routing-bench > $d/routing-bench.log 2>&1
echo routing-bench rc=$?
grep "^| pack\|^| combine" $d/routing-bench/results.md | cut -c1-200
tar czf $OUT/w.tgz -C $OUT w && rm -rf $d
