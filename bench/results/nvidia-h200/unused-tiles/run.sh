# Variant 39 on the GPU machine (repository root), with variant39.patch applied: what the
# unused tiles' zeros cost (probe.py, this tree), the layer's per-kernel A/B against HEAD,
# the compiled tests the patch touches, then moe-bench and the parity subset. Writes under
# $OUT/u (~8 minutes; split it where a call's limit is shorter).
export PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200
mkdir -p $OUT/u
PYTHONPATH=$PWD timeout 100 python3 $D/unused-tiles/probe.py $OUT/u/probe.json > $OUT/u/probe.txt 2>&1
echo probe rc=$?; grep "{" $OUT/u/probe.txt | cut -c1-300
bash $D/kernel-breakdown/ab.sh $OUT/u gpt-oss-20b:pallas/binned:fwd gpt-oss-20b:pallas/binned:fwd+bwd gpt-oss-20b:pallas/dropless:fwd+bwd
PYTHONPATH=$PWD timeout 400 python3 -m pytest -q -m gpu tests/kernels/test_grouped_matmul_mgpu.py tests/kernels/test_gmm_glu.py tests/kernels/test_scatter.py tests/core/test_layer.py tests/core/test_binned_ops.py tests/core/test_unused_rows.py tests/core/test_expert_bias.py > $OUT/u/pytest-gpu.txt 2>&1
echo pytest rc=$?; tail -2 $OUT/u/pytest-gpu.txt
tar czf $OUT/u.tgz -C $OUT u && rm -rf $OUT/u
