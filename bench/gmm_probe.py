"""Helpers of the probe scripts under bench/results (GPU only): synthetic
gpt-oss-20b-like tile layouts, their operands, CUPTI timing, a JSON record log, and a
layer case compiled as moe-bench builds it."""
from __future__ import annotations

import json

import numpy as np

import jax
import jax.numpy as jnp


def layout(e: int, tiles: int, seed: int, lead_unused: int = 0):
  """([tiles] group, [tiles] fill) int32: 3-5 row tiles per expert, a random fill of the
  expert's last tile, `lead_unused` unused tiles first and the rest unused last."""
  rng = np.random.default_rng(seed)
  groups, fills = [-1] * lead_unused, [0] * lead_unused
  for g in range(e):
    n = int(rng.integers(3, 6))
    for i in range(n):
      groups.append(g)
      fills.append(128 if i < n - 1 else int(rng.integers(1, 129)))
  groups, fills = groups[:tiles], fills[:tiles]
  while len(groups) < tiles:
    groups.append(-1)
    fills.append(0)
  return jnp.asarray(groups, jnp.int32), jnp.asarray(fills, jnp.int32)


def operands(e: int, k: int, n: int, tiles: int, transpose: bool = False, seed: int = 0,
             lead_unused: int = 0):
  """(x [tiles*128, K], w [E, K, N] or [E, N, K], bias [E, N], group, fill), bf16."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k1, (tiles * 128, k), jnp.bfloat16)
  shape = (e, n, k) if transpose else (e, k, n)
  w = (jax.random.normal(k2, shape, jnp.float32) / np.sqrt(k)).astype(jnp.bfloat16) * 3
  b = jax.random.normal(k3, (e, n), jnp.float32).astype(jnp.bfloat16)
  g, f = layout(e, tiles, seed + 1, lead_unused)
  return x, w, b, g, f


def cupti_ms(f, args, reps: int = 3, iterations: int = 10) -> list[float]:
  """`reps` medians of CUPTI kernel ms over `iterations` calls each, after a warm call."""
  from jax.experimental.mosaic.gpu import profiler  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(f(*args))
  out = []
  for _ in range(reps):
    _, t = profiler.measure(f, iterations=iterations)(*args)
    out.append(float(np.median(t)))
  return out


class Log:
  """Prints each record and rewrites the JSON file after each (a killed run keeps them)."""

  def __init__(self, path: str, **head):
    self.path, self.out = path, dict(head, rows=[])

  def __call__(self, **record):
    print(record, flush=True)
    self.out["rows"].append(record)
    with open(self.path, "w") as f:
      json.dump(self.out, f, indent=1)


def glu_backward_operands(e: int, tiles: int, hidden: int, inter: int, seed: int = 6):
  """The experts' backward on a synthetic layout (`layout`): (h [R, 2I], the up bias,
  group, fill, g [R, H], the down weights [E, I, H]), bf16; h = x @ w_up of random x
  zeroed on the layout's empty rows, g zero there too."""
  from moe_jax import kernels  # pylint: disable=g-import-not-at-top
  x, w_up, b, group, fill = operands(e, hidden, 2 * inter, tiles, seed=seed)
  keep = (jnp.arange(tiles * 128) % 128 < jnp.repeat(fill, 128))[:, None]
  keep = keep & jnp.repeat(group >= 0, 128)[:, None]
  x = jnp.where(keep, x, 0).astype(x.dtype)
  h = kernels.gmm(x, w_up, group, implementation="pallas")
  g = jnp.where(keep, jax.random.normal(jax.random.key(9), (tiles * 128, hidden), jnp.bfloat16),
                0)
  w_down = (jax.random.normal(jax.random.key(10), (e, inter, hidden), jnp.float32)
            / hidden ** 0.5).astype(jnp.bfloat16)
  return h, b, group, fill, g, w_down


def trace_events(prof) -> list[dict]:
  """The complete ("X") events of a finished torch.profiler session: host ranges, CUDA
  API calls and device activity (every kernel of the process, JAX's included), on one
  clock in µs."""
  import os  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "trace.json")
    prof.export_chrome_trace(path)
    with open(path) as f:
      return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def framework_case(config: str, framework: str, impl: str, mode: str, *,
                   variant: str | None = None, component: str = "layer", warm: int = 0,
                   runners: dict | None = None):
  """(runner, built, fn): a case of `moe-bench` for either framework, built and prepared
  as its runners build them (`JaxRunner` / `TorchRunner`), after `warm` synced calls on
  its rotated inputs. `variant` defaults to the impl's part after "/" ("dropless" for a
  torch impl without one); `runners` caches one runner per framework across calls."""
  # pylint: disable=import-outside-toplevel
  from bench import configs
  from bench.plan import CaseSpec
  from bench.timing import Protocol
  runners = {} if runners is None else runners
  if framework not in runners:
    if framework == "jax":
      from bench.runners_jax import JaxRunner as runner_cls
    else:
      from bench.runners_torch import TorchRunner as runner_cls
    runners[framework] = runner_cls(configs.select(config)[0], Protocol())
  runner = runners[framework]
  if variant is None:
    variant = impl.split("/")[1] if "/" in impl else "dropless"
  case = CaseSpec(config=config, component=component, mode=mode, framework=framework,
                  impl=impl, variant=variant)
  built = runner.build(case)
  fn, _, _ = runner.prepare(built)
  for i in range(warm):
    runner.sync(fn(*built.inputs[i % len(built.inputs)]))
  return runner, built, fn


def bench_case(config: str, impl: str, mode: str, component: str = "layer", warm: int = 5):
  """(compiled, inputs): the JAX case of `moe-bench` (`framework_case`) for one config,
  impl ("pallas/binned", ...), mode and component, after `warm` synced calls on its
  rotated inputs."""
  _, built, compiled = framework_case(config, "jax", impl, mode, component=component,
                                      warm=warm)
  return compiled, built.inputs
