# Variant 37 on the GPU machine (repository root): the probe against HEAD's kernel (a git
# archive) and this tree's, and the compiled GLU tests. Writes under $OUT/r.
# The layer's A/B at the probe's best block: layer.py (see its docstring).
D=bench/results/nvidia-h200
bash $D/kernel-breakdown/probe_ab.sh $OUT/r $D/glu-loop/probe.py 90
python3 -c "
import json
for f in ('base', 'new'):
  for r in json.load(open('$OUT/r/probe-%s.json' % f))['rows']: print(f, r.get('block'), sorted(r.get('ms', [0, 0, 0]))[1], r.get('dh_differing'), r.get('sums_max_rel'), r.get('error', '')[:80])"
PYTHONPATH=$PWD timeout 100 python3 -m pytest -q -m gpu tests/kernels/test_glu.py > $OUT/r/pytest-gpu.txt 2>&1
echo pytest rc=$?; tail -2 $OUT/r/pytest-gpu.txt
