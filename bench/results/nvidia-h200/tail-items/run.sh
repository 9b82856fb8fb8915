# Variant 38 (the skip alone) on the GPU machine (repository root): the probe at HEAD and
# in this tree, ptxas's report of this tree's ping-pong kernels, and the compiled gmm
# tests. Writes under $OUT/r.
D=bench/results/nvidia-h200
bash $D/kernel-breakdown/probe_ab.sh $OUT/r $D/tail-items/probe.py
python3 -c "
import json
for f in ('base', 'new'):
  for r in json.load(open('$OUT/r/probe-%s.json' % f))['rows']: print(f, r['op'], r['fills'], sorted(r.get('ms', [0, 0, 0]))[1], r.get('sha'), r.get('half_tiles'), r.get('error', '')[:200])"
PYTHONPATH=$PWD MOSAIC_GPU_DUMP_PTXAS=1 timeout 60 python3 -c "
import jax, jax.numpy as jnp
from bench import gmm_probe
from moe_jax import kernels
x, w, b, g, f = gmm_probe.operands(4, 256, 384, 8, seed=1)
kernels.gmm_glu(x, w, b, g, f, activation='gpt_oss_glu', implementation='pallas', return_h=True)[0].block_until_ready()
kernels.gmm(x, w, g, tile_fill=f, implementation='pallas').block_until_ready()
kernels.gmm(x[:, :256], jnp.swapaxes(w, 1, 2), g, tile_fill=f, transpose_rhs=True, implementation='pallas').block_until_ready()
" > $OUT/r/ptxas.txt 2>&1
echo ptxas rc=$?; grep -i "C7512\|spill\|Used [0-9]* registers" $OUT/r/ptxas.txt | sort | uniq -c | head -20
PYTHONPATH=$PWD timeout 150 python3 -m pytest -q -m gpu tests/kernels/test_grouped_matmul_mgpu.py tests/kernels/test_gmm_glu.py > $OUT/r/pytest-gpu.txt 2>&1
echo pytest rc=$?; tail -3 $OUT/r/pytest-gpu.txt
