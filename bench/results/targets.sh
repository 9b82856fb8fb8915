#!/bin/bash
# The speed issue's targets with the code at hand, on whichever GPU runs it: the
# moe-bench runs of `bench/results/nvidia-h200/b2b-protocol/run.sh` (B with one row
# more), from the repository root on the GPU machine ($OUT set). Each moe-bench run
# times both frameworks the same way, in one process, with its own floors.
#   A: gpt-oss-20b layer (every fast row of both frameworks), the routing-bench pack and
#      combine, the notebook config (334 s on an H200, 2026-12-05; on an H100 the
#      notebook's run hit its old 100 s limit, and alone took 97 s: now 200 s)
#   B: sonic-medium layer, with the padded xla/binned for target 6 (dropless within 10%
#      of binned mode); about 4 minutes (the three other rows took 2.5 on an H200)
#   C: the whole parity catalogue on the "pallas" JAX path (about 5 minutes)
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
d=$OUT/r; mkdir -p $d
case "$1" in
A)
  timeout 300 python3 -m bench.cli --configs gpt-oss-20b --components layer --impls jax:pallas/binned,jax:pallas/dropless,jax:xla/binned,torch:grouped+compile,torch:binned,torch:grouped --frameworks jax,torch --deadline 280 --out $d/gpt-oss-20b > $d/gpt-oss-20b.log 2>&1
  echo gpt-oss-20b rc=$? "(${SECONDS} s)"
  timeout 150 python3 -m bench.cli --configs routing-bench --components pack,combine --modes fwd --impls jax:pallas/binned,jax:xla/binned,torch:dropless,torch:binned --frameworks jax,torch --deadline 140 --out $d/routing-bench > $d/routing-bench.log 2>&1
  echo routing-bench rc=$? "(${SECONDS} s)"
  timeout 200 python3 -m bench.cli --configs notebook --components layer --impls jax:xla/binned,jax:pallas/binned,torch:binned --frameworks jax,torch --deadline 190 --out $d/notebook > $d/notebook.log 2>&1
  echo notebook rc=$? "(${SECONDS} s)";;
B)
  timeout 420 python3 -m bench.cli --configs sonic-medium --components layer --impls jax:pallas/binned,jax:pallas/dropless,jax:xla/binned,torch:grouped+compile --frameworks jax,torch --deadline 390 --out $d/sonic-medium > $d/sonic-medium.log 2>&1
  echo sonic-medium rc=$? "(${SECONDS} s)";;
C)
  timeout 540 python3 -m parity --full --jax-impl pallas --no-progress --failures-only --out $d/parity > $d/parity.log 2>&1
  echo parity rc=$? "(${SECONDS} s)"; tail -5 $d/parity.log;;
*) echo "usage: run.sh A|B|C"; exit 2;;
esac
for f in $d/*/README.md; do echo "== $f"; sed -n '/^| config/,/^$/p' $f; done
tar czf $OUT/r$1.tgz -C $OUT r && rm -rf $d
