# Per-kernel CUPTI breakdown of layer rows at HEAD (a git archive) and in this tree, one
# right after the other (repository root, GPU machine):
#   bash bench/results/nvidia-h200/kernel-breakdown/ab.sh OUTDIR CONFIG:IMPL:MODE ...
# writes OUTDIR/layer-{base,new}.{json,txt} and prints each row's total.
OUTDIR=$1; shift
D=bench/results/nvidia-h200/kernel-breakdown
rm -rf /tmp/base && mkdir -p /tmp/base && git archive HEAD | tar -x -C /tmp/base
(cd /tmp/base && PYTHONPATH=/tmp/base timeout 120 python3 $D/breakdown.py $OUTDIR/layer-base.json "$@") > $OUTDIR/layer-base.txt 2>&1
echo base rc=$?
PYTHONPATH=$PWD timeout 120 python3 $D/breakdown.py $OUTDIR/layer-new.json "$@" > $OUTDIR/layer-new.txt 2>&1
echo new rc=$?
grep -h "==" $OUTDIR/layer-*.txt
