# Variant 39's layer rows and parity on the GPU machine (repository root, patch applied).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p $OUT/b
timeout 230 python3 -m bench.cli --configs gpt-oss-20b --components layer --impls jax:pallas/binned,jax:pallas/dropless,jax:xla/binned,torch:grouped+compile,torch:binned --frameworks jax,torch --deadline 220 --out $OUT/b/gpt-oss-20b-unused > $OUT/b/bench.log 2>&1
echo bench rc=$?
timeout 200 python3 -m parity.cli --full --jax-impl pallas --cases gpt-oss-20b-bf16 gpt-oss-20b-cf1.0-bf16 --implementations binned grouped --no-progress --failures-only --out $OUT/b/parity > $OUT/b/parity.log 2>&1
echo parity rc=$?; tail -5 $OUT/b/parity.log
tar czf $OUT/b.tgz -C $OUT b && rm -rf $OUT/b
