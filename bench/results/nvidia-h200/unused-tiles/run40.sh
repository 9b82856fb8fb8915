# Variant 40 on the GPU machine (repository root, the change in the tree): the layer's
# per-kernel A/B against this tree less variant40.patch, then the compiled GLU, layer and
# unused-row tests. Writes $OUT/v40.tgz (~6 minutes).
export PYTHONUNBUFFERED=1
D=bench/results/nvidia-h200
mkdir -p $OUT/v40
AB_REVERT=$D/unused-tiles/variant40.patch bash $D/kernel-breakdown/ab.sh $OUT/v40 \
  gpt-oss-20b:pallas/binned:fwd+bwd gpt-oss-20b:pallas/dropless:fwd+bwd
PYTHONPATH=$PWD timeout 240 python3 -m pytest -q -m gpu tests/kernels/test_glu.py tests/core/test_layer.py > $OUT/v40/pytest-gpu.txt 2>&1
echo pytest-gpu rc=$?; tail -1 $OUT/v40/pytest-gpu.txt
PYTHONPATH=$PWD timeout 120 python3 -m pytest -q tests/core/test_unused_rows.py > $OUT/v40/pytest-unused.txt 2>&1
echo pytest-unused rc=$?; tail -1 $OUT/v40/pytest-unused.txt
tar czf $OUT/v40.tgz -C $OUT v40 && rm -rf $OUT/v40
