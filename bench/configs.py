"""Named benchmark configurations and suites.

Every config is one layer shape (E, K, H, I), a token count T and a dtype. The
binned variants use `capacity_factor`; the dropless variants ignore it. Sweeps are
ordinary configs that carry `sweep` and `sweep_value`, so every row stays flat.

What was scaled to fit one 80 GB GPU is said in each config's `note`.
"""
from __future__ import annotations

import dataclasses
import fnmatch

COMPONENTS = ("routing", "pack", "combine", "experts", "layer")
MODES = ("fwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16")
WEIGHT_SCHEMES = ("hash", "notebook")
# binned_loop copies every token-slot in Python; above this many slots it only measures Python.
SMALL_SLOTS = 2048


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig:
  """One benchmarked layer shape.

  Attributes:
    name: unique name, used by `--configs` and in every row.
    num_experts: E.
    top_k: K.
    hidden_size: H.
    intermediate_size: I (gate_up has 2I columns).
    num_tokens: T = batch * seq.
    batch: B, for the description only (T = B * S).
    dtype: "float32" or "bfloat16", of weights, activations and matmul operands.
    capacity_factor: C = ceil(capacity_factor * T * K / E) for the binned variants.
    weights: "hash" (exact integer-hash values, generated on the device, identical
      bits in JAX and PyTorch) or "notebook" (the reference notebook's seeded
      weights from `moe_torch_ref.weights.generate`, generated on the CPU).
    seed: seed of the inputs.
    components: components run by default (a subset of COMPONENTS).
    modes: modes run by default (a subset of MODES).
    impls: default implementation globs ("framework:impl"), or None for all.
    sweep: None, "tokens" or "capacity".
    sweep_value: T or the capacity factor of this sweep point.
    note: provenance, and what was scaled to fit one GPU.
  """
  name: str
  num_experts: int
  top_k: int
  hidden_size: int
  intermediate_size: int
  num_tokens: int
  batch: int = 1
  dtype: str = "bfloat16"
  capacity_factor: float = 1.25
  weights: str = "hash"
  seed: int = 17
  components: tuple[str, ...] = COMPONENTS
  modes: tuple[str, ...] = MODES
  impls: tuple[str, ...] | None = None
  sweep: str | None = None
  sweep_value: float | None = None
  note: str = ""

  def __post_init__(self):
    for name in ("num_experts", "top_k", "hidden_size", "intermediate_size", "num_tokens",
                 "batch"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r} (config {self.name!r})")
    if self.top_k > self.num_experts:
      raise ValueError(f"top_k must be <= num_experts={self.num_experts}, got {self.top_k}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
    if self.weights not in WEIGHT_SCHEMES:
      raise ValueError(f"weights must be one of {WEIGHT_SCHEMES}, got {self.weights!r}")
    if not self.capacity_factor > 0:
      raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")
    for name, valid in (("components", COMPONENTS), ("modes", MODES)):
      bad = [v for v in getattr(self, name) if v not in valid]
      if bad:
        raise ValueError(f"{name} must be a subset of {valid}, got {bad}")
    if self.sweep not in (None, "tokens", "capacity"):
      raise ValueError(f"sweep must be None, 'tokens' or 'capacity', got {self.sweep!r}")

  @property
  def seq(self) -> int:
    return self.num_tokens // self.batch

  @property
  def small(self) -> bool:
    """Whether Python-loop implementations (binned_loop) are run: T*K <= SMALL_SLOTS."""
    return self.num_tokens * self.top_k <= SMALL_SLOTS

  @property
  def dtype_bytes(self) -> int:
    return 4 if self.dtype == "float32" else 2

  def shape_dict(self) -> dict:
    """The flat fields every row carries."""
    return dict(E=self.num_experts, K=self.top_k, H=self.hidden_size, I=self.intermediate_size,
                T=self.num_tokens, B=self.batch, S=self.seq, dtype=self.dtype,
                capacity_factor=self.capacity_factor, weights=self.weights,
                sweep=self.sweep, sweep_value=self.sweep_value)

  @classmethod
  def from_row(cls, row: dict) -> BenchConfig:
    """The config a result row was measured with, rebuilt from the row's own fields."""
    return cls(name=row["config"], num_experts=row["E"], top_k=row["K"], hidden_size=row["H"],
               intermediate_size=row["I"], num_tokens=row["T"], batch=row.get("B") or 1,
               dtype=row["dtype"], capacity_factor=row["capacity_factor"],
               weights=row.get("weights", "hash"), sweep=row.get("sweep"),
               sweep_value=row.get("sweep_value"))

  def describe(self) -> str:
    return (f"E={self.num_experts} K={self.top_k} H={self.hidden_size} "
            f"I={self.intermediate_size} T={self.num_tokens} {self.dtype}")


def _c(**kw) -> BenchConfig:
  return BenchConfig(**kw)


NOTEBOOK = _c(
    name="notebook", num_experts=128, top_k=4, hidden_size=1152, intermediate_size=1152,
    num_tokens=100, batch=1, dtype="float32", weights="notebook", seed=123,
    note="The reference notebook: E128 H1152 K4 B1 S100 fp32, weights seeds 999/777, input "
         "seed 123. I = H = 1152 because its weights are gate_up [E,H,2H] and down [E,H,H] "
         "(its INTERMEDIATE_SIZE=3072 is never used). Capacity is ceil(1.25*T*K/E)=4, not "
         "the notebook's batch-size-based 1. Unscaled.")
SONIC_SMALL = _c(
    name="sonic-small", num_experts=8, top_k=2, hidden_size=1024, intermediate_size=4096,
    num_tokens=16 * 256, batch=16,
    note="SonicMoE-style small: E8 H1024 I4096 K2 B16xS256, bf16. Unscaled.")
SONIC_MEDIUM = _c(
    name="sonic-medium", num_experts=64, top_k=4, hidden_size=4096, intermediate_size=14336,
    num_tokens=32 * 512, batch=32,
    note="SonicMoE-style medium: E64 H4096 I14336 K4 B32xS512, bf16. Unscaled: weights are "
         "22.5 GB, so fwd+bwd holds 45 GB of weights and gradients.")
SONIC_LARGE = _c(
    name="sonic-large", num_experts=256, top_k=8, hidden_size=7168, intermediate_size=2048,
    num_tokens=8 * 2048, batch=8,
    note="SonicMoE-style large (DeepSeek-V3 shape): E256 H7168 K8. SCALED: I 14336 -> 2048 "
         "(DeepSeek-V3's own expert width; at I=14336 the bf16 weights alone are 158 GB) "
         "and T 32x2048=65536 -> 8x2048=16384 (fwd+bwd activations of 65536 tokens with "
         "K=8 do not fit beside 45 GB of weights and gradients).")
GPT_OSS_20B = _c(
    name="gpt-oss-20b", num_experts=32, top_k=4, hidden_size=2880, intermediate_size=2880,
    num_tokens=4096, batch=1,
    note="GPT-OSS-20b-like MLP: E32 H=I=2880 K4, T=4096, bf16. Unscaled.")
ROUTING_BENCH = _c(
    name="routing-bench", num_experts=128, top_k=2, hidden_size=4096, intermediate_size=1024,
    num_tokens=16384, components=("routing", "pack", "combine"),
    note="moe-routing-bench: T=16384 H=4096 E=128 K=2, bf16, seed 17; routing, pack and "
         "combine only by default. It fixes no I; I=1024 is used if experts or layer are "
         "asked for.")

MAIN = (NOTEBOOK, GPT_OSS_20B, SONIC_SMALL, ROUTING_BENCH, SONIC_MEDIUM, SONIC_LARGE)

# Sweeps run a few key implementations only.
_SWEEP_IMPLS = ("jax:*", "torch:binned", "torch:grouped", "torch:transformers/grouped_mm")
TOKEN_SWEEP = tuple(
    dataclasses.replace(GPT_OSS_20B, name=f"tokens-T{t}", num_tokens=t, batch=1,
                        components=("layer",), impls=_SWEEP_IMPLS, sweep="tokens",
                        sweep_value=t,
                        note=f"Token sweep on the gpt-oss-20b shape, T={t}.")
    for t in (256, 1024, 4096, 16384))
CAPACITY_SWEEP = tuple(
    dataclasses.replace(ROUTING_BENCH, name=f"capacity-cf{cf:.2f}", capacity_factor=cf,
                        components=("pack", "combine", "layer"),
                        impls=("jax:*binned", "torch:binned"), sweep="capacity",
                        sweep_value=cf,
                        note=f"Capacity sweep on the routing-bench shape (I=1024), cf={cf}.")
    for cf in (1.0, 1.1, 1.25, 1.5, 2.0))

# The CPU default: notebook-shaped, tiny, and quick to compile on two cores.
CPU_MINI = _c(
    name="cpu-mini", num_experts=16, top_k=4, hidden_size=128, intermediate_size=128,
    num_tokens=100, dtype="float32", seed=123,
    note="Notebook-shaped (K4, T=100, fp32) but E16 H=I=128: the CPU default.")
CPU_TOKENS = tuple(
    dataclasses.replace(CPU_MINI, name=f"cpu-tokens-T{t}", num_tokens=t, components=("layer",),
                        modes=("fwd",), impls=("jax:xla/*", "torch:binned", "torch:grouped"),
                        sweep="tokens", sweep_value=t, note=f"CPU token sweep, T={t}.")
    for t in (32, 128, 512))
# Used by the tests (--quick): the smallest shape that still drops slots.
TINY = _c(name="tiny", num_experts=8, top_k=2, hidden_size=64, intermediate_size=64,
          num_tokens=48, dtype="float32", note="Test-only shape.")

ALL = MAIN + TOKEN_SWEEP + CAPACITY_SWEEP + (CPU_MINI,) + CPU_TOKENS + (TINY,)
BY_NAME = {c.name: c for c in ALL}
if len(BY_NAME) != len(ALL):
  raise RuntimeError("config names must be unique")

SUITES: dict[str, tuple[str, ...]] = {
    "cpu-small": (CPU_MINI.name,) + tuple(c.name for c in CPU_TOKENS),
    "quick": (TINY.name,),
    "main": tuple(c.name for c in MAIN),
    "tokens": tuple(c.name for c in TOKEN_SWEEP),
    "capacity": tuple(c.name for c in CAPACITY_SWEEP),
    "sweeps": tuple(c.name for c in TOKEN_SWEEP + CAPACITY_SWEEP),
    "full": tuple(c.name for c in MAIN + TOKEN_SWEEP + CAPACITY_SWEEP),
}


def select(spec: str) -> list[BenchConfig]:
  """Configs named by a comma list of suite names, config names or globs.

  Example:
    >>> [c.name for c in select("notebook,tokens-T1024")]
    ['notebook', 'tokens-T1024']
  """
  out: list[BenchConfig] = []
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    if part in SUITES:
      names = SUITES[part]
    else:
      names = tuple(n for n in BY_NAME if fnmatch.fnmatchcase(n, part))
      if not names:
        raise ValueError(f"unknown config or suite {part!r}; suites: {sorted(SUITES)}; "
                         f"configs: {sorted(BY_NAME)}")
    out.extend(BY_NAME[n] for n in names if BY_NAME[n] not in out)
  if not out:
    raise ValueError(f"--configs {spec!r} selects no config")
  return out
