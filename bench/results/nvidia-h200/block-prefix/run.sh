# Variant 41 on the GPU machine (repository root): the prefix probe, the compiled rank
# and layout tests, a per-kernel A/B of the pack and the binned forward (this tree
# against it with prefix-kernel.patch reverted), then the pack and combine rows of both
# frameworks under moe-bench.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200/block-prefix
d=$OUT/v; mkdir -p $d
timeout 150 python3 $D/probe.py $d/probe.json > $d/probe.txt 2>&1; echo probe rc=$?
timeout 150 python3 -m pytest -q -m gpu tests/kernels/test_ranks.py tests/kernels/test_layout.py > $d/pytest-gpu.txt 2>&1; echo pytest rc=$?; tail -2 $d/pytest-gpu.txt
AB_REVERT=$D/prefix-kernel.patch bash bench/results/nvidia-h200/kernel-breakdown/ab.sh $d routing-bench:pallas/binned:fwd:pack gpt-oss-20b:pallas/binned:fwd
timeout 150 python3 -m bench.cli --configs routing-bench --components pack,combine --modes fwd --impls jax:pallas/binned,jax:xla/binned,torch:dropless,torch:binned --frameworks jax,torch --deadline 140 --out $d/routing-bench > $d/routing-bench.log 2>&1
echo routing-bench rc=$?
sed -n '/^| config/,/^$/p' $d/routing-bench/README.md
grep "^| pack\|^| combine" $d/routing-bench/results.md | cut -c1-160
tar czf $OUT/v.tgz -C $OUT v && rm -rf $d
