"""The one catalogue of parity cases.

A case names everything that shapes the numbers: T (as B and S), H, I, E, K, the
capacity factor (None = dropless), the dtype, the weight init scheme, the router
kind, the activation, the input scale and seed, and which stages it checks. Every
case carries a small variant (same E, K, router, activation, capacity factor, dtype
and scheme; smaller T, H, I) that runs in seconds on a CPU.

Inputs are x = randn(B, S, H) * input_scale drawn in float32 by torch with
`input_seed`, then cast to the dtype. The notebook case keeps the notebook's
scale 0.1. The others use 1.0: with the Kaiming-uniform router (bound 1/sqrt(H)),
logits then have std ~0.58 instead of ~0.06, so the routing softmax is far from
uniform, and gate pre-activations (std ~0.02*sqrt(H)) reach the GLU's nonlinear
range instead of its linear one.
"""
from __future__ import annotations

import dataclasses

DTYPES = ("float32", "bfloat16")
SCHEMES = ("seed-notebook", "nonzero-bias")
ROUTERS = ("gpt_oss", "softmax_topk")
ACTIVATIONS = ("gpt_oss_glu", "swiglu")
# "all": routing, dispatch, experts, combine, end-to-end output and gradients.
# "dispatch_combine": routing, dispatch and combine only (moe-routing-bench's scope);
# the combine then runs on the reference's own expert outputs.
STAGE_SETS = ("all", "dispatch_combine")

INPUT_SEED = 123  # the notebook's input seed
ROUTING_BENCH_SEED = 17  # moe-routing-bench fixes seed=17 everywhere


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmallSizes:
  """The sizes a case shrinks to for CPU runs (E, K and everything else are kept)."""
  batch: int
  seq: int
  hidden: int
  intermediate: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
  """One parity case.

  Attributes:
    name: unique, used by `--cases`.
    batch: B. seq: S. T = B*S tokens.
    hidden: H. intermediate: I (gate_up is [E, H, 2I]).
    experts: E. top_k: K.
    capacity_factor: C = ceil(capacity_factor*T*K/E); None is dropless.
    dtype: "float32" or "bfloat16", of weights, inputs and compute.
    scheme: weight init scheme of moe_torch_ref.weights.generate.
    router: "gpt_oss" or "softmax_topk". normalize_topk: renormalise softmax_topk.
    activation: "gpt_oss_glu" or "swiglu".
    input_scale: x = randn * input_scale.
    input_seed: torch seed of x.
    tied_router: copy router rows (and biases) 2j onto 2j+1, so every token meets
      exact ties between experts 2j and 2j+1; exercises the lower-index tie-break.
    stages: one of STAGE_SETS.
    small: the sizes of the small variant.
    about: one line saying what the case stands for.
  """
  name: str
  batch: int
  seq: int
  hidden: int
  intermediate: int
  experts: int
  top_k: int
  capacity_factor: float | None
  dtype: str
  scheme: str
  router: str = "gpt_oss"
  normalize_topk: bool = True
  activation: str = "gpt_oss_glu"
  input_scale: float = 1.0
  input_seed: int = INPUT_SEED
  tied_router: bool = False
  stages: str = "all"
  small: SmallSizes
  about: str = ""

  def __post_init__(self):
    for field in ("batch", "seq", "hidden", "intermediate", "experts", "top_k"):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{field} must be an int >= 1, got {value!r} (case {self.name!r})")
    if self.top_k > self.experts:
      raise ValueError(f"top_k must be <= experts={self.experts}, got {self.top_k} "
                       f"(case {self.name!r})")
    if self.capacity_factor is not None and not self.capacity_factor > 0:
      raise ValueError(f"capacity_factor must be > 0 or None, got {self.capacity_factor!r} "
                       f"(case {self.name!r})")
    for field, valid in (("dtype", DTYPES), ("scheme", SCHEMES), ("router", ROUTERS),
                         ("activation", ACTIVATIONS), ("stages", STAGE_SETS)):
      if getattr(self, field) not in valid:
        raise ValueError(f"{field} must be one of {valid}, got {getattr(self, field)!r} "
                         f"(case {self.name!r})")
    if self.tied_router and self.experts % 2:
      raise ValueError(f"tied_router needs an even number of experts, got E={self.experts} "
                       f"(case {self.name!r})")

  @property
  def tokens(self) -> int:
    """T = B * S."""
    return self.batch * self.seq

  @property
  def dropless(self) -> bool:
    return self.capacity_factor is None

  def small_variant(self) -> "Case":
    """The same case at its small sizes (E, K and the semantics unchanged)."""
    s = self.small
    return dataclasses.replace(self, batch=s.batch, seq=s.seq, hidden=s.hidden,
                               intermediate=s.intermediate)

  def describe(self) -> dict:
    """The case's defining fields, for reports."""
    return {
        "T": self.tokens, "B": self.batch, "S": self.seq, "H": self.hidden,
        "I": self.intermediate, "E": self.experts, "K": self.top_k,
        "capacity_factor": "dropless" if self.dropless else self.capacity_factor,
        "dtype": self.dtype, "scheme": self.scheme, "router": self.router,
        "activation": self.activation, "input_scale": self.input_scale,
        "input_seed": self.input_seed, "tied_router": self.tied_router, "stages": self.stages,
    }


_NOTEBOOK = dict(batch=1, seq=100, hidden=1152, intermediate=1152, experts=128, top_k=4,
                 input_scale=0.1, small=SmallSizes(batch=1, seq=100, hidden=64, intermediate=64))
_GPT_OSS_20B = dict(batch=1, seq=512, hidden=2880, intermediate=2880, experts=32, top_k=4,
                    small=SmallSizes(batch=1, seq=64, hidden=96, intermediate=96))
_MIXTRAL = dict(batch=1, seq=512, hidden=1024, intermediate=4096, experts=8, top_k=2,
                router="softmax_topk", normalize_topk=True, activation="swiglu",
                scheme="seed-notebook",  # zero biases: Mixtral has none
                small=SmallSizes(batch=1, seq=64, hidden=64, intermediate=256))

CATALOGUE: tuple[Case, ...] = (
    Case(name="notebook", **_NOTEBOOK, capacity_factor=None, dtype="float32",
         scheme="seed-notebook",
         about="the reference notebook: E=128 H=I=1152 K=4 B=1 S=100 fp32, its seeds and scale"),
    Case(name="notebook-bf16", **_NOTEBOOK, capacity_factor=None, dtype="bfloat16",
         scheme="seed-notebook", about="the notebook config in bf16"),
    Case(name="notebook-cf1.0", **_NOTEBOOK, capacity_factor=1.0, dtype="float32",
         scheme="nonzero-bias", about="notebook sizes, binned with capacity factor 1.0"),
    Case(name="notebook-cf0.5-bf16", **_NOTEBOOK, capacity_factor=0.5, dtype="bfloat16",
         scheme="nonzero-bias", about="notebook sizes, capacity factor 0.5 (half the slots drop)"),
    Case(name="gpt-oss-20b", **_GPT_OSS_20B, capacity_factor=None, dtype="float32",
         scheme="nonzero-bias", about="GPT-OSS-20b-like MLP: E=32 H=I=2880 K=4"),
    Case(name="gpt-oss-20b-cf1.0-bf16", **_GPT_OSS_20B, capacity_factor=1.0, dtype="bfloat16",
         scheme="nonzero-bias", about="GPT-OSS-20b-like, bf16, capacity factor 1.0"),
    # T*K/E = 128 slots per expert: the dropless layout's 128-row tiles, so on a Hopper
    # GPU the grouped matmuls and their gradients run the Mosaic GPU kernels.
    Case(name="gpt-oss-20b-bf16", **dict(_GPT_OSS_20B, seq=1024), capacity_factor=None,
         dtype="bfloat16", scheme="nonzero-bias",
         about="GPT-OSS-20b-like, bf16, dropless at T=1024: the Mosaic GPU gmm/tgmm path"),
    Case(name="mixtral", **_MIXTRAL, capacity_factor=None, dtype="float32",
         about="Mixtral-like: E=8 K=2 H=1024 I=4096, softmax-then-top-k, SwiGLU, no biases"),
    # Small at T=256 (C = 32 = one 32-row tile per expert): binned "pallas" runs the
    # grouped layout there too, so CI compares that path with the references.
    Case(name="mixtral-cf0.5-bf16",
         **dict(_MIXTRAL, small=SmallSizes(batch=1, seq=256, hidden=64, intermediate=256)),
         capacity_factor=0.5, dtype="bfloat16",
         about="Mixtral-like in bf16 with capacity factor 0.5"),
    Case(name="routing-bench", batch=1, seq=16384, hidden=4096, intermediate=16, experts=128,
         top_k=2, capacity_factor=1.0, dtype="bfloat16", scheme="seed-notebook",
         input_seed=ROUTING_BENCH_SEED, stages="dispatch_combine",
         small=SmallSizes(batch=1, seq=512, hidden=256, intermediate=16),
         about="moe-routing-bench-like: E=128 K=2 H=4096, dispatch and combine only "
               "(I=16: the expert MLP is not compared)"),
    Case(name="ties", batch=1, seq=64, hidden=64, intermediate=64, experts=8, top_k=2,
         capacity_factor=None, dtype="float32", scheme="nonzero-bias", tied_router=True,
         small=SmallSizes(batch=1, seq=64, hidden=64, intermediate=64),
         about="router rows tied in pairs: every token meets exact ties (lower index wins)"),
)

NAMES: tuple[str, ...] = tuple(c.name for c in CATALOGUE)


def select(names: list[str] | None = None, *, small: bool = False) -> list[Case]:
  """The catalogue cases named (all if None), in catalogue order, optionally small.

  Raises:
    ValueError: a name that is not in the catalogue (all such names are listed).
  """
  if names:
    unknown = [n for n in names if n not in NAMES]
    if unknown:
      raise ValueError(f"cases must be among {list(NAMES)}, got unknown {unknown}")
  chosen = [c for c in CATALOGUE if not names or c.name in names]
  return [c.small_variant() for c in chosen] if small else chosen
