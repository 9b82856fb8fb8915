"""Per-kernel CUPTI times of layer rows, as moe-bench builds them (JAX).

For each row: the kernels of one call in launch order, each the median over
ITERS calls of its duration (ms), and their sum; the same kernels summed by name.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/kernel-breakdown/breakdown.py OUT.json \
      [CONFIG:IMPL:MODE[:COMPONENT] ...]
(COMPONENT defaults to layer.)
"""
import collections
import json
import sys

ROWS = [("gpt-oss-20b", "pallas/binned", "fwd"), ("gpt-oss-20b", "pallas/binned", "fwd+bwd"),
        ("gpt-oss-20b", "pallas/dropless", "fwd"), ("notebook", "xla/binned", "fwd")]
if len(sys.argv) > 2:  # a subset: CONFIG:IMPL:MODE[:COMPONENT] ...
  ROWS = [tuple(a.split(":")) for a in sys.argv[2:]]
ITERS = 7


def main(out_path):
  import jax
  import numpy as np
  from jax.experimental.mosaic.gpu import profiler

  from bench import configs
  from bench.plan import CaseSpec
  from bench.runners_jax import JaxRunner
  from bench.timing import Protocol

  report = []
  for config, impl, mode, *component in ROWS:
    component = component[0] if component else "layer"
    runner = JaxRunner(configs.select(config)[0], Protocol())
    case = CaseSpec(config=config, component=component, mode=mode, framework="jax", impl=impl,
                    variant=impl.split("/")[1])
    built = runner.build(case)
    compiled, _, _ = runner.prepare(built)
    args = built.inputs[0]
    jax.block_until_ready(compiled(*args))
    calls = [profiler.measure(compiled, aggregate=False)(*args)[1] for _ in range(ITERS)]
    # A call may launch a different number of kernels (seen on fwd+bwd): keep the
    # calls of the most common launch sequence.
    seqs = collections.Counter(tuple(n for n, _ in c) for c in calls)
    names = list(seqs.most_common(1)[0][0])
    same = [c for c in calls if [n for n, _ in c] == names]
    times = np.median(np.array([[t for _, t in c] for c in same]), axis=0)
    by_name = collections.defaultdict(float)
    for n, t in zip(names, times):
      by_name[n] += float(t)
    row = dict(config=config, component=component, impl=impl, mode=mode, total_ms=round(float(times.sum()), 4),
               calls=len(same), launch_sequences=len(seqs),
               kernels=[(n, round(float(t), 4)) for n, t in zip(names, times)],
               by_name=sorted(((n, round(t, 4)) for n, t in by_name.items()),
                              key=lambda p: -p[1]))
    print(f"== {config} {component} {impl} {mode}: {len(names)} kernels, {row['total_ms']} ms", flush=True)
    for n, t in row["kernels"]:
      print(f"  {t:8.4f}  {n[:110]}", flush=True)
    report.append(row)
    with open(out_path, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
