"""Energy per call against the gmm launch order (`MatmulConfig.row_band`), sustained.

Nsight Compute read the cooperative gmm_glu's DRAM traffic as ~2.0 GB per call
(`cluster-sweep/ncu-gmm-glu.txt`: 49.7% of the H200's 4.8 TB/s over 847 µs) against
~1.3 GB of weights, rows and outputs: the experts' weights read ~1.7 times. A band of
`row_band` row tiles launches all of a weight column block's row tiles together; the
default band is the layout's average tiles per expert (4 on gpt-oss-20b), so an expert
whose tiles straddle two bands has its weights read twice. Wider bands read each weight
block once per band of tiles. Under the power cap, HBM bytes are energy, so this measures
J per call and ms per call, sustained (`probe.sustained`), for bands of 4 (the default),
8, 16 and all tiles: gmm_glu on the probe's synthetic layout (zero padding) and the
dropless forward+backward layer (every gmm call of it takes the band), two rounds.

Each case's output SHA-1 is logged once (launch orders must give the same bits).
PROBE_BANDS (comma-separated, "None" for one band) picks the bands; "expert" is
`MatmulConfig.row_band="expert"` as landed (variant 44; the ping-pong kernels only, so
not in the CPU smoke run). The first measurement of variant 44 used its experiment's
patch (`expert-bands/variant44.patch`, switched on by MOE_EXPERT_BANDS=1 whatever the
band) instead.

usage (repository root, GPU machine):
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 bench/results/nvidia-h200/energy/bands.py OUT.json
On a CPU, PROBE_SMOKE=1 runs gmm_glu alone on small shapes with a fake counter.
"""
import dataclasses
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe  # noqa: E402  pylint: disable=wrong-import-position

BANDS = tuple(None if b == "None" else b if b == "expert" else int(b)
              for b in os.environ.get("PROBE_BANDS", "4,8,16,None").split(","))


def digest(out) -> str:
  """SHA-1 of every output array's bytes, in tree order (equal launch orders give equal
  bits: the order changes no sum)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(out):
    h.update(np.asarray(leaf).tobytes())
  return h.hexdigest()[:16]


def main(out_path):
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from bench.gmm_probe import Log, operands
  from bench.nvml import Nvml
  from moe_jax import kernels
  from moe_jax.kernels import api
  nvml = probe._FakeNvml() if probe.SMOKE else Nvml.open()  # pylint: disable=protected-access
  log = Log(out_path, power_limit_w=nvml.power_limit_w(), settle_s=probe.SETTLE_S,
            measure_s=probe.MEASURE_S)
  e, tiles, hidden, inter = (4, 12, 128, 64) if probe.SMOKE else (32, 143, 2880, 2880)
  x, w, b, group, fill = operands(e, hidden, 2 * inter, tiles, seed=3)
  keep = (jnp.arange(tiles * 128) % 128 < jnp.repeat(fill, 128))[:, None]
  x = jnp.where(keep, x, 0).astype(x.dtype)
  base = api.default_matmul_config(128, hidden, 2 * inter, x.dtype,
                                   tiles_per_expert=tiles // e)
  original = api._mosaic_config  # pylint: disable=protected-access
  cases = {}
  for band in BANDS:
    if probe.SMOKE and band == "expert":
      continue  # the CPU runs the Triton kernel, which has no such launch order
    config = dataclasses.replace(base, row_band=band)
    glu = jax.jit(lambda x, f, c=config: kernels.gmm_glu(
        x, w, b, group, f, activation="gpt_oss_glu", implementation="pallas", config=c))
    cases[f"gmm_glu band {band}"] = lambda g=glu: probe.jax_case(g, [(x, fill)])
    if probe.SMOKE:
      continue

    def layer(band=band):
      def banded(*args, **kw):
        config = original(*args, **kw)
        if config is not None and not kw.get("transposed"):
          config = dataclasses.replace(config, row_band=band)
        return config
      api._mosaic_config = banded  # pylint: disable=protected-access
      try:  # the case compiles while the patch holds
        return probe.layer_case("jax", "pallas/dropless", "fwd+bwd", {})
      finally:
        api._mosaic_config = original  # pylint: disable=protected-access
    cases[f"dropless fwd+bwd band {band}"] = layer
  built = {}
  for rnd in range(probe.ROUNDS):
    for name, make in cases.items():
      if name not in built:
        burst, per_call, first = make()
        built[name] = burst, per_call
        log(case=name, output_sha1=digest(first),
            expert_bands=os.environ.get("MOE_EXPERT_BANDS"))
      burst, per_call = built[name]
      log(case=name, round=rnd, cool_burst_ms_per_call=per_call,
          **probe.sustained(burst, nvml, per_call))
  log(case="config", base=repr(base), default_band=base.row_band)


if __name__ == "__main__":
  main(sys.argv[1])
