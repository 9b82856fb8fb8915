"""Variant 14 of bench/NOTES.md: the Mosaic gmm/tgmm told each tile's fill (rows holding
a slot) skip the empty rows of the dropless layout: gmm's 64-row warpgroup halves past
the fill (192-column blocks), tgmm's 64-row steps after a group's last filled row.

Kernel rows (gpt-oss-20b and sonic-medium dropless layouts of the H100 sweeps; lhs zero
past the fill, as the layer gives it): CUPTI kernel time (median of n calls) and host
wall over n back-to-back calls, with tile_fill against without, bit for bit. Layer
rows: the gpt-oss-20b dropless layer with and without tile_fill (patched out of the
experts call), with mma_in_flight 0 and 1, kernel time and back-to-back wall, and the
kernels of the fastest forward+backward by time.

usage (repository root, GPU machine): python3 bench/results/nvidia-h200/fill-sweep/fill.py OUT.json
"""
import dataclasses
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]
                       / "nvidia-h100-80gb-hbm3" / "mgpu-sweep"))
from sweep_common import Recorder, dropless_layout, timeit  # noqa: E402

from moe_jax import experts  # noqa: E402
from moe_jax.kernels import api, gmm, tgmm  # noqa: E402

record = Recorder(sys.argv[1])
print(jax.__version__, jax.devices()[0], flush=True)


def cupti_ms(f, *args, n):
  _, times = profiler.measure(f, iterations=n)(*args)
  return float(np.median(times))


def timed(f, *args, n):
  jax.block_until_ready(f(*args))
  return dict(kernel_ms=round(cupti_ms(f, *args, n=n), 4), wall_ms=round(timeit(f, *args, n=n), 4))


rng = np.random.default_rng(0)
for name, E, H, I, K, T, n in [("gpt-oss-20b", 32, 2880, 2880, 4, 4096, 30),
                                ("medium", 64, 4096, 14336, 4, 16384, 4)]:
  meta = dropless_layout(rng, T, E, K)
  te, fill, R = meta.tile_expert, meta.tile_fill, meta.num_rows
  filled = experts.fill_mask(fill, R)[:, None]
  f = np.asarray(fill)
  print(f"{name}: R={R} tiles={te.shape[0]} used={int((f > 0).sum())} "
        f"half-full or less={int(((f > 0) & (f <= 64)).sum())} rows={int(f.sum())}", flush=True)
  keys = jax.random.split(jax.random.key(0), 2)
  useful = lambda kd, nd: 2 * T * K * kd * nd  # noqa: E731
  ops = [("up", H, 2 * I, False), ("down", I, H, False), ("up dx", 2 * I, H, True)]
  for op, kdim, ndim, transpose in (ops if name == "gpt-oss-20b" else []):
    x = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16) * filled
    w = jax.random.normal(keys[1], (E, ndim, kdim) if transpose else (E, kdim, ndim),
                          jnp.bfloat16) * 0.02
    base = None
    for use_fill in (False, True):
      g = jax.jit(lambda a, b, t, fl, u=use_fill: gmm(a, b, t, tile_fill=fl if u else None,
                                                      transpose_rhs=transpose,
                                                      implementation="pallas"))
      out = g(x, w, te, fill)
      same = None if base is None else bool(jnp.array_equal(out, base))
      base = out if base is None else base
      r = timed(g, x, w, te, fill, n=n)
      record(shape=name, op=op, impl="gmm default", tile_fill=use_fill, **r,
             tflops=round(useful(kdim, ndim) / r["kernel_ms"] / 1e9), bitwise_vs_no_fill=same)
    del x, w, base
  for op, kdim, ndim in [("up dw", H, 2 * I), ("down dw", I, H)]:
    a = jax.random.normal(keys[0], (R, kdim), jnp.bfloat16) * filled
    g_ = jax.random.normal(keys[1], (R, ndim), jnp.bfloat16) * filled
    base = None
    for use_fill in (False, True):
      g = jax.jit(lambda a, b, t, fl, u=use_fill: tgmm(a, b, t, num_groups=E,
                                                       tile_fill=fl if u else None,
                                                       implementation="pallas"))
      out = g(a, g_, te, fill)
      same = None if base is None else bool(jnp.array_equal(out, base))
      base = out if base is None else base
      r = timed(g, a, g_, te, fill, n=n)
      record(shape=name, op=op, impl="tgmm default", tile_fill=use_fill, **r,
             tflops=round(useful(kdim, ndim) / r["kernel_ms"] / 1e9), bitwise_vs_no_fill=same)
    del a, g_, base

# The layer: tile_fill patched out of the experts call, or mma_in_flight patched in.
from bench import configs  # noqa: E402
from bench.plan import CaseSpec  # noqa: E402
from bench.runners_jax import JaxRunner  # noqa: E402
from bench.timing import Protocol  # noqa: E402

plain_experts, plain_config = experts.dropless_experts, api._mosaic_config
cfg = configs.select("gpt-oss-20b")[0]
runner = JaxRunner(cfg, Protocol())
for row, use_fill, in_flight in [("pallas/dropless", False, 0), ("pallas/dropless", True, 0),
                                 ("pallas/dropless", True, 1), ("xla/binned", None, None)]:
  if use_fill is False:
    experts.dropless_experts = lambda *a, **k: plain_experts(*a, **{**k, "tile_fill": None})
  if in_flight:
    api._mosaic_config = lambda *a, **k: (
        None if (c := plain_config(*a, **k)) is None else dataclasses.replace(c, mma_in_flight=1))
  for mode in ("fwd", "fwd+bwd"):
    case = CaseSpec(config="gpt-oss-20b", component="layer", mode=mode, framework="jax",
                    impl=row, variant=row.split("/")[1])
    built = runner.build(case)
    compiled, _, _ = runner.prepare(built)
    args = built.inputs
    for _ in range(3):
      jax.block_until_ready(compiled(*args[0]))
    kernel = cupti_ms(compiled, *args[0], n=20)
    walls = []
    for _ in range(10):
      jax.block_until_ready(compiled(*args[0]))
      t0 = time.perf_counter()
      for i in range(20):
        o = compiled(*args[i % len(args)])
      jax.block_until_ready(o)
      walls.append((time.perf_counter() - t0) / 20 * 1e3)
    _, per = profiler.measure(compiled, aggregate=False)(*args[0])
    names = {}
    for kname, ms in per:
      c, s_ = names.get(kname[:60], (0, 0.0))
      names[kname[:60]] = (c + 1, s_ + ms)
    top = sorted(((k, c, round(s_, 4)) for k, (c, s_) in names.items()), key=lambda r: -r[2])[:12]
    record(shape="gpt-oss-20b", op="layer " + mode, impl=row, tile_fill=use_fill,
           in_flight=in_flight, kernel_ms=round(kernel, 4),
           wall_b2b_ms=round(float(np.median(walls)), 4), kernels=top)
    del compiled, built
  experts.dropless_experts, api._mosaic_config = plain_experts, plain_config
