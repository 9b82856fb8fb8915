# Per-kernel CUPTI breakdown of layer rows at HEAD (a git archive) and in this tree, one
# right after the other (repository root, GPU machine):
#   bash bench/results/nvidia-h200/kernel-breakdown/ab.sh OUTDIR CONFIG:IMPL:MODE ...
# writes OUTDIR/layer-{base,new}.{json,txt} and prints each row's total. With
# AB_REVERT=PATCH the base is this tree with PATCH reverse-applied instead (the device's
# HEAD is the session's starting commit, older than the code under test).
# AB_TIMEOUT (seconds, default 120) bounds each side's run.
OUTDIR=$1; shift
D=bench/results/nvidia-h200/kernel-breakdown
rm -rf /tmp/base && mkdir -p /tmp/base
if [ -n "$AB_REVERT" ]; then
  git ls-files -co --exclude-standard | tar -cf - -T - | tar -x -C /tmp/base
  (cd /tmp/base && git apply -R "$OLDPWD/$AB_REVERT") || { echo "cannot revert $AB_REVERT"; exit 1; }
else
  git archive HEAD | tar -x -C /tmp/base
fi
(cd /tmp/base && PYTHONPATH=/tmp/base timeout ${AB_TIMEOUT:-120} python3 $D/breakdown.py $OUTDIR/layer-base.json "$@") > $OUTDIR/layer-base.txt 2>&1
echo base rc=$?
PYTHONPATH=$PWD timeout ${AB_TIMEOUT:-120} python3 $D/breakdown.py $OUTDIR/layer-new.json "$@" > $OUTDIR/layer-new.txt 2>&1
echo new rc=$?
grep -h "==" $OUTDIR/layer-*.txt
