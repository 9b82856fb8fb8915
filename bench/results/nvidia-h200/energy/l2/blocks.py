"""Energy per call against the ping-pong gmm's column block: how much does L2 traffic cost?

NOTES Next 9 leaves 2-CTA multicast (variant 26: a CTA pair shares the lhs tile, ~20%
fewer L2-to-SMEM bytes per FLOP) as the last lever on the grouped matmuls' energy. It
was slower on a cool GPU, and under the 700 W cap time follows energy, so whether it
could pay turns on what an L2 byte costs. This measures the mirror image with the
kernels as they are: narrower column blocks load more bytes per FLOP.
Per K step of 64, a [128, BN] item loads a [128, 64] lhs tile (16 KB) and a [64, BN]
weight tile: 12.7 KB per MFLOP at BN = 192, 15.3 at 128 (+20.6%), 22.9 at 64 (+80%).
Multicast of the lhs at BN = 192 would take it to 10.2 (-20%).

Cases: the plain gmm (N = 5760, gpt-oss-20b's up projection without the GLU) at
BN 192 / 4 stages (the default), 128 / 5 and 64 / 6; gmm_glu at 192 / 4 and 128 / 5;
the probe's synthetic layout with zero padding (`energy/bands.py`'s operands); two
rounds, `probe.sustained` (J and ms per call under the cap) and the cool ms per call.
Each case's output SHA-1 is logged (the column block changes no sum: equal bits).

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 bench/results/nvidia-h200/energy/l2/blocks.py OUT.json
"""
import dataclasses
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import bands  # noqa: E402  pylint: disable=wrong-import-position
import probe  # noqa: E402  pylint: disable=wrong-import-position

GMM = ((192, 4), (128, 5), (64, 6))
GLU = ((192, 4), (128, 5))


def main(out_path):
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from bench.gmm_probe import Log, operands
  from bench.nvml import Nvml
  from moe_jax import kernels
  from moe_jax.kernels import api
  nvml = Nvml.open()
  log = Log(out_path, power_limit_w=nvml.power_limit_w(), settle_s=probe.SETTLE_S,
            measure_s=probe.MEASURE_S)
  e, tiles, hidden, inter = 32, 143, 2880, 2880
  x, w, b, group, fill = operands(e, hidden, 2 * inter, tiles, seed=3)
  keep = (jnp.arange(tiles * 128) % 128 < jnp.repeat(fill, 128))[:, None]
  x = jnp.where(keep, x, 0).astype(x.dtype)
  base = api.default_matmul_config(128, hidden, 2 * inter, x.dtype,
                                   tiles_per_expert=tiles // e)
  log(case="config", base=repr(base))
  cases = {}
  for bn, stages in GMM:
    c = dataclasses.replace(base, block_n=bn, num_stages=stages)
    f = jax.jit(lambda x, c=c: kernels.gmm(x, w, group, implementation="pallas", config=c))
    cases[f"gmm bn {bn}/{stages}"] = lambda f=f: probe.jax_case(f, [(x,)])
  for bn, stages in GLU:
    c = dataclasses.replace(base, block_n=bn, num_stages=stages)
    f = jax.jit(lambda x, f_, c=c: kernels.gmm_glu(
        x, w, b, group, f_, activation="gpt_oss_glu", implementation="pallas", config=c))
    cases[f"gmm_glu bn {bn}/{stages}"] = lambda f=f: probe.jax_case(f, [(x, fill)])
  built = {}
  for rnd in range(probe.ROUNDS):
    for name, make in cases.items():
      if name not in built:
        try:
          burst, per_call, first = make()
        except Exception as err:  # pylint: disable=broad-except
          log(case=name, error=f"{type(err).__name__}: {str(err)[:400]}")
          built[name] = None
          continue
        built[name] = burst, per_call
        log(case=name, output_sha1=bands.digest(first))
      if built[name] is None:
        continue
      burst, per_call = built[name]
      log(case=name, round=rnd, cool_burst_ms_per_call=per_call,
          **probe.sustained(burst, nvml, per_call))


if __name__ == "__main__":
  main(sys.argv[1])
