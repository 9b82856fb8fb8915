# Variant 36 on the GPU machine (repository root): the layer's per-kernel breakdown
# before (HEAD) and after (this tree), and the compiled tests of the binned ops and the
# layer. Writes under $OUT/r.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200
mkdir -p $OUT/r
ROWS="gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd"
rm -rf /tmp/base && mkdir -p /tmp/base && git archive HEAD | tar -x -C /tmp/base
(cd /tmp/base && PYTHONPATH=/tmp/base timeout 120 python3 $D/kernel-breakdown/breakdown.py $OUT/r/layer-base.json $ROWS) > $OUT/r/layer-base.txt 2>&1
echo base rc=$?
timeout 120 python3 $D/kernel-breakdown/breakdown.py $OUT/r/layer-new.json $ROWS > $OUT/r/layer-new.txt 2>&1
echo new rc=$?
grep -h "==" $OUT/r/layer-*.txt
timeout 250 python3 -m pytest -q -m gpu tests/core/test_binned_ops.py tests/core/test_layer.py tests/core/test_expert_bias.py > $OUT/r/pytest-gpu.txt 2>&1
echo pytest rc=$?; tail -3 $OUT/r/pytest-gpu.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $OUT/r
