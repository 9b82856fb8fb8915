# Variant 36 on the GPU machine (repository root): the layer's per-kernel breakdown
# before (HEAD) and after (this tree), and the compiled tests of the binned ops and the
# layer. Writes under $OUT/r.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200
mkdir -p $OUT/r
bash $D/kernel-breakdown/ab.sh $OUT/r gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd
timeout 250 python3 -m pytest -q -m gpu tests/core/test_binned_ops.py tests/core/test_layer.py tests/core/test_expert_bias.py > $OUT/r/pytest-gpu.txt 2>&1
echo pytest rc=$?; tail -3 $OUT/r/pytest-gpu.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $OUT/r
