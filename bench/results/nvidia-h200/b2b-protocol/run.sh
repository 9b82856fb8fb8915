# The speed issue's targets under the calibrated back-to-back protocol (2026-12-03), on
# the GPU machine from the repository root: gpt-oss-20b, the routing-bench pack and
# combine and the notebook in this call (`bash ... run.sh A`); sonic-medium in a second
# (`bash ... run.sh B`). Each moe-bench run times both frameworks the same way.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
d=$OUT/r; mkdir -p $d
if [ "$1" = A ]; then
  timeout 300 python3 -m bench.cli --configs gpt-oss-20b --components layer --impls jax:pallas/binned,jax:pallas/dropless,jax:xla/binned,torch:grouped+compile,torch:binned,torch:grouped --frameworks jax,torch --deadline 280 --out $d/gpt-oss-20b > $d/gpt-oss-20b.log 2>&1
  echo gpt-oss-20b rc=$?
  timeout 150 python3 -m bench.cli --configs routing-bench --components pack,combine --modes fwd --impls jax:pallas/binned,jax:xla/binned,torch:dropless,torch:binned --frameworks jax,torch --deadline 140 --out $d/routing-bench > $d/routing-bench.log 2>&1
  echo routing-bench rc=$?
  timeout 100 python3 -m bench.cli --configs notebook --components layer --impls jax:xla/binned,jax:pallas/binned,torch:binned --frameworks jax,torch --deadline 90 --out $d/notebook > $d/notebook.log 2>&1
  echo notebook rc=$?
else
  timeout 330 python3 -m bench.cli --configs sonic-medium --components layer --impls jax:pallas/binned,jax:pallas/dropless,torch:grouped+compile --frameworks jax,torch --deadline 300 --out $d/sonic-medium > $d/sonic-medium.log 2>&1
  echo sonic-medium rc=$?
fi
for f in $d/*/README.md; do echo "== $f"; sed -n '/^| config/,/^$/p' $f; done
tar czf $OUT/r$1.tgz -C $OUT r && rm -rf $d
