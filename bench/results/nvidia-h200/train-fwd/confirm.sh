# Variant 33's confirmation on the GPU machine (repository root): the compiled tests of
# the other Mosaic matmul files, the gpt-oss-20b layer bench and the pallas parity subset.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p $OUT/c
timeout 170 python3 -m pytest -q -m gpu tests/kernels/test_grouped_matmul_mgpu.py tests/kernels/test_glu.py tests/kernels/test_api.py > $OUT/c/pytest-gpu-2.txt 2>&1
echo pytest rc=$?; tail -2 $OUT/c/pytest-gpu-2.txt
timeout 280 python3 -m bench.cli --configs gpt-oss-20b --components layer --impls jax:pallas/binned,jax:pallas/dropless,jax:xla/binned,torch:grouped+compile,torch:binned --frameworks jax,torch --deadline 230 --out $OUT/c/gpt-oss-20b-trainfwd > $OUT/c/bench.log 2>&1
echo bench rc=$?
timeout 100 python3 -m parity.cli --full --jax-impl pallas --cases gpt-oss-20b-bf16 gpt-oss-20b-cf1.0-bf16 --implementations binned grouped --no-progress --failures-only --out $OUT/c/parity-subset > $OUT/c/parity.log 2>&1
echo parity rc=$?; tail -5 $OUT/c/parity.log
sed -n '/Side by side/,/^- speedup/p' $OUT/c/gpt-oss-20b-trainfwd/layer/results.md 2>/dev/null | head -12
tar czf $OUT/c.tgz -C $OUT c && rm -rf $OUT/c
