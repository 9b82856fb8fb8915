# A probe script at HEAD (a git archive; the probe file itself from this tree) and in this
# tree, one right after the other (repository root, GPU machine):
#   bash bench/results/nvidia-h200/kernel-breakdown/probe_ab.sh OUTDIR PROBE.py [TIMEOUT_S]
# The probe takes its JSON output path; writes OUTDIR/probe-{base,new}.{json,txt}.
OUTDIR=$1; PROBE=$2; LIMIT=${3:-110}
export PYTHONUNBUFFERED=1
mkdir -p $OUTDIR
rm -rf /tmp/base && mkdir -p /tmp/base && git archive HEAD | tar -x -C /tmp/base
(cd /tmp/base && PYTHONPATH=/tmp/base timeout $LIMIT python3 $OLDPWD/$PROBE $OUTDIR/probe-base.json) > $OUTDIR/probe-base.txt 2>&1
echo probe-base rc=$?
PYTHONPATH=$PWD timeout $LIMIT python3 $PROBE $OUTDIR/probe-new.json > $OUTDIR/probe-new.txt 2>&1
echo probe-new rc=$?
