# Variant 33 on the GPU machine (repository root): the probe with ptxas reports, the
# layer's per-kernel breakdown before (HEAD) and after (this tree), and the gpu tests
# that touch the change. Writes under $OUT/r.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200
mkdir -p $OUT/r
MOSAIC_GPU_DUMP_PTXAS=1 timeout 150 python3 $D/train-fwd/probe.py $OUT/r/probe.json > $OUT/r/probe.txt 2>&1
echo probe rc=$?
bash $D/kernel-breakdown/ab.sh $OUT/r gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd+bwd
timeout 200 python3 -m pytest -q -m gpu tests/kernels/test_gmm_glu.py tests/core/test_layer.py > $OUT/r/pytest-gpu.txt 2>&1
echo pytest rc=$?
tail -3 $OUT/r/pytest-gpu.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $OUT/r
