# The overhead probe, then the compiled test files that run/touch no changed kernel
# directly (the others ran in run.sh and confirm.sh). Writes under $OUT/o.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p $OUT/o
timeout 150 python3 bench/results/nvidia-h200/train-fwd/overhead.py $OUT/o/overhead.json > $OUT/o/overhead.txt 2>&1
echo overhead rc=$?; cat $OUT/o/overhead.txt | grep "{"
timeout 400 python3 -m pytest -q -m gpu tests/kernels/test_grouped_matmul.py tests/core/test_binned_ops.py tests/torch_ref tests/kernels/test_combine.py tests/kernels/test_gather.py tests/kernels/test_layout.py tests/kernels/test_ranks.py tests/kernels/test_scatter.py tests/kernels/test_slot_dots.py tests/kernels/test_topk.py > $OUT/o/pytest-gpu-3.txt 2>&1
echo pytest rc=$?; tail -2 $OUT/o/pytest-gpu-3.txt
tar czf $OUT/o.tgz -C $OUT o && rm -rf $OUT/o
