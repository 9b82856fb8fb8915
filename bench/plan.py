"""Which rows a run has: every (config, component, mode, framework, impl), and why a
planned row is skipped. Skips are decided here, before anything runs, so that every
skipped row is written with its reason and nothing disappears silently."""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Any

from bench.configs import COMPONENTS, MODES, BenchConfig

FRAMEWORKS = ("torch", "jax")

# (impl, variant): variant is the dispatch layout, "binned" (capacity, [E, C, H]) or
# "dropless" (expert-sorted rows: [M, H] in torch, moe_jax's tile layout [R, H]); None
# for routing.
JAX_IMPLS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "routing": (("xla", None), ("pallas", None)),
    "pack": (("xla/binned", "binned"), ("xla/dropless", "dropless"),
             ("pallas/binned", "binned"), ("pallas/dropless", "dropless")),
    "combine": (("xla/binned", "binned"), ("xla/dropless", "dropless"),
                ("pallas/binned", "binned"), ("pallas/dropless", "dropless")),
    # Binned expert GEMMs are XLA einsums; dropless ones are grouped matmuls, ragged_dot
    # ("xla") or the Pallas gmm/tgmm kernels ("pallas").
    "experts": (("binned", "binned"), ("xla/dropless", "dropless"),
                ("pallas/dropless", "dropless")),
    # Layer "pallas/binned" runs the grouped layout where it fits (`layer_dispatch`):
    # grouped matmuls over each expert's kept slots; "xla/binned" the padded einsums.
    "layer": (("xla/binned", "binned"), ("xla/dropless", "dropless"),
              ("pallas/binned", "binned"), ("pallas/dropless", "dropless")),
}
TORCH_IMPLS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "routing": (("sort", None), ("topk", None)),
    "pack": (("binned", "binned"), ("dropless", "dropless")),
    "combine": (("binned", "binned"), ("dropless", "dropless")),
    "experts": (("binned", "binned"), ("grouped", "dropless")),
    "layer": (("binned_loop", "binned"), ("binned", "binned"), ("gpt_oss_dense", "dropless"),
              ("gpt_oss_loop", "dropless"), ("grouped", "dropless"),
              ("grouped+compile", "dropless"), ("transformers/eager", "dropless"),
              ("transformers/grouped_mm", "dropless")),
}
# transformers' own experts implementations that are run as optional peers.
_TRANSFORMERS_CORE = ("eager", "grouped_mm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseSpec:
  """One planned row.

  Attributes:
    config: config name.
    component: routing, pack, combine, experts or layer.
    mode: fwd or fwd+bwd.
    framework: jax or torch.
    impl: implementation name within the framework and component.
    variant: "binned", "dropless" or None (routing).
    skip: the reason this row is not run, or None.
  """
  config: str
  component: str
  mode: str
  framework: str
  impl: str
  variant: str | None
  skip: str | None = None

  @property
  def key(self) -> tuple[str, str, str, str, str]:
    return (self.config, self.component, self.mode, self.framework, self.impl)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> CaseSpec:
    return cls(**data)


def torch_peers() -> tuple[str, ...]:
  """transformers' other experts implementations (batched_mm, deepgemm, sonicmoe, ...)."""
  try:
    from moe_torch_ref import hf  # pylint: disable=import-outside-toplevel
  except ImportError:
    return ()
  if not hf.AVAILABLE:
    return ()
  return tuple(f"transformers/{n}" for n in hf.experts_implementations()
               if n not in _TRANSFORMERS_CORE)


def is_peer(impl: str) -> bool:
  """Whether a torch layer implementation is an optional peer (it may be unavailable)."""
  return impl.startswith("transformers/") and impl.split("/", 1)[1] not in _TRANSFORMERS_CORE


def _matches(framework: str, impl: str, globs: Sequence[str]) -> bool:
  name = f"{framework}:{impl}"
  return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(impl, g) for g in globs)


def _dense_bytes(cfg: BenchConfig, impl: str, mode: str) -> int | None:
  """Activation bytes of the implementations that materialise per-expert or per-slot copies."""
  t, e, k = cfg.num_tokens, cfg.num_experts, cfg.top_k
  h, i, b = cfg.hidden_size, cfg.intermediate_size, cfg.dtype_bytes
  if impl == "gpt_oss_dense":  # [E, T, 2I], [E, T, I] and [E, T, H]
    fwd = e * t * (3 * i + h) * b
  elif impl == "transformers/batched_mm":  # per-slot copies of gate_up and down: [M, H, 3I]
    fwd = t * k * 3 * h * i * b
  else:
    return None
  return int(fwd * (2.5 if mode == "fwd+bwd" else 1))


def _skip_reason(cfg: BenchConfig, component: str, mode: str, framework: str, impl: str, *,
                 gpu: bool, explicit: bool, memory_budget: int,
                 transformers_ok: bool) -> str | None:
  if framework == "torch" and impl == "binned_loop" and not cfg.small:
    return (f"binned_loop copies each of the T*K={cfg.num_tokens * cfg.top_k} slots in Python; "
            f"run only where T*K <= 2048")
  if framework == "torch" and impl.startswith("transformers/") and not transformers_ok:
    return "transformers (GptOssMLP) is not importable"
  need = _dense_bytes(cfg, impl, mode)
  if need is not None and need > memory_budget:
    return (f"needs ~{need / 2**30:.0f} GiB of per-expert copies, over the "
            f"{memory_budget / 2**30:.0f} GiB budget")
  if not gpu and not explicit:
    if impl.startswith("pallas/"):
      return ("no GPU: Pallas would run in the interpreter, whose time says nothing about the "
              "kernel (ask for jax:pallas/* to run it anyway)")
    if impl == "grouped+compile":
      return "no GPU: torch.compile's CPU build takes minutes (ask for torch:grouped+compile)"
    if is_peer(impl):
      return "no GPU: transformers' kernel-backed experts peers need CUDA"
  return None


def plan(configs: Sequence[BenchConfig], *, frameworks: Sequence[str] = FRAMEWORKS,
         components: Sequence[str] | None = None, modes: Sequence[str] | None = None,
         impls: Sequence[str] | None = None, gpu: bool, memory_bytes: int,
         peers: Sequence[str] = ()) -> list[CaseSpec]:
  """Every row of a run, skipped ones included.

  Args:
    configs: the configs to run.
    frameworks: subset of FRAMEWORKS.
    components: override of each config's components (None: the config's own).
    modes: override of each config's modes.
    impls: globs over "framework:impl" (or "impl"); None: each config's default.
      Giving them also lifts the CPU-only skips (Pallas interpreter, torch.compile).
    gpu: whether a GPU runs the benchmark.
    memory_bytes: device memory; half of it is the budget for dense baselines.
    peers: extra torch layer implementations (transformers' experts peers).

  Returns:
    CaseSpecs ordered by config, framework (in the order given), component, impl, mode.

  Raises:
    ValueError: an override names a framework, component or mode that does not exist, or
      an impls glob matches no implementation of the frameworks and components planned.
  """
  validate(configs, frameworks=frameworks, components=components, modes=modes, impls=impls,
           peers=peers)
  transformers_ok = bool(peers) or _transformers_ok()
  out = []
  for cfg in configs:
    globs = tuple(impls) if impls else cfg.impls
    for framework in frameworks:  # in the order asked for
      for component in (components or cfg.components):
        for impl, variant in _choices(framework, component, peers):
          if globs and not _matches(framework, impl, globs):
            continue
          for mode in (modes or cfg.modes):
            skip = _skip_reason(cfg, component, mode, framework, impl, gpu=gpu,
                                explicit=bool(impls), memory_budget=memory_bytes // 2,
                                transformers_ok=transformers_ok)
            out.append(CaseSpec(config=cfg.name, component=component, mode=mode,
                                framework=framework, impl=impl, variant=variant, skip=skip))
  return out


def _choices(framework: str, component: str,
             peers: Sequence[str]) -> list[tuple[str, str | None]]:
  """(impl, variant) of one framework's component, the torch layer's peers included."""
  table = JAX_IMPLS if framework == "jax" else TORCH_IMPLS
  choices = list(table[component])
  if framework == "torch" and component == "layer":
    choices += [(p, "dropless") for p in peers]
  return choices


def _subset(option: str, given: Sequence[str] | None, allowed: Sequence[str]) -> None:
  bad = [v for v in (given or ()) if v not in allowed]
  if bad:
    raise ValueError(f"{option} must be a comma list of {', '.join(allowed)}; "
                     f"got {', '.join(map(repr, bad))}")


def validate(configs: Sequence[BenchConfig], *, frameworks: Sequence[str],
             components: Sequence[str] | None, modes: Sequence[str] | None,
             impls: Sequence[str] | None, peers: Sequence[str] = ()) -> None:
  """Checks plan()'s overrides against the tables; a ValueError names the moe-bench option.

  A runner reads any mode but "fwd" as fwd+bwd while the metrics count it as forward
  only, and an unknown component has no table: both must stop here, before a row is
  planned. A glob that matches nothing would plan no rows and "succeed" with no data.
  """
  _subset("--frameworks", frameworks, FRAMEWORKS)
  _subset("--components", components, COMPONENTS)
  _subset("--modes", modes, MODES)
  if not impls:
    return
  planned = components or tuple(dict.fromkeys(c for cfg in configs for c in cfg.components))
  names = [f"{fw}:{impl}" for fw in frameworks for comp in planned
           for impl, _ in _choices(fw, comp, peers)]
  names = list(dict.fromkeys(names))
  for glob in impls:
    if not any(_matches(*name.split(":", 1), (glob,)) for name in names):
      raise ValueError(
          f"--impls {glob!r} matches no implementation of frameworks {','.join(frameworks)} "
          f"and components {','.join(planned)}; implementations: {', '.join(names)}")


def _transformers_ok() -> bool:
  try:
    from moe_torch_ref import hf  # pylint: disable=import-outside-toplevel
  except ImportError:
    return False
  return hf.AVAILABLE
