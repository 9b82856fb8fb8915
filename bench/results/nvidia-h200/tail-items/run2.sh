# Variant 38 with `tile_order` on the GPU machine (repository root): the probe at HEAD
# and in this tree, then the layer's per-kernel A/B. Writes under $OUT/r2.
D=bench/results/nvidia-h200
bash $D/kernel-breakdown/probe_ab.sh $OUT/r2 $D/tail-items/probe.py
python3 -c "
import json
for f in ('base', 'new'):
  for r in json.load(open('$OUT/r2/probe-%s.json' % f))['rows']: print(f, r['op'], r['fills'], sorted(r.get('ms', [0, 0, 0]))[1], r.get('sha'), r.get('error', '')[:200])"
bash $D/kernel-breakdown/ab.sh $OUT/r2 gpt-oss-20b:pallas/dropless:fwd+bwd gpt-oss-20b:pallas/binned:fwd gpt-oss-20b:pallas/binned:fwd+bwd
tar czf $OUT/r2.tgz -C $OUT r2 && rm -rf $OUT/r2
