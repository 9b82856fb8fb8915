"""Tolerance tables: one per dtype (and precision mode), one entry per stage, each with its reason.

Error model. u is the unit roundoff: 2^-24 ~ 6.0e-8 for float32, 2^-11 ~ 4.9e-4 for
TF32 (the default fp32 matmul of JAX on recent NVIDIA GPUs), 2^-8 ~ 3.9e-3 for
bfloat16. Two correct implementations of a length-n dot product that only sum in a
different order differ by ~u*sqrt(n) relative to the result (random-sign terms;
n*u is the worst case). The largest reductions in the catalogue are H=4096 (router,
routing-bench), H=2880 -> I=2880 (GPT-OSS-20b experts), H=1024 -> I=4096 (Mixtral
experts) and T=512 (weight gradients), so u*sqrt(n) <= 64u. In bfloat16 the
rounding of stored intermediates dominates instead: every tensor the torch side
stores in bf16 costs up to u relative, while JAX accumulates in f32 and rounds
once per stage.

Metrics (see compare.py): `rel_fro` = ||a - b||_F / ||b||_F, and `abs_scaled` =
max|a - b| / max|b|. A "close" stage passes when both are within bounds; max rel
error is reported but not gated (it measures cancellation near zero, not the
implementation). Stages downstream of routing are cumulative: they carry every
upstream JAX difference except the routing choice (see run.py).

These bounds come from the model above, not from one input: each sits at a few
times the modelled error at the catalogue's largest reduction, and far below what
a real bug produces (a wrong alpha, a missing bias or a wrong expert moves the
affected stage by 1e-2 to 1 relative; see tests/parity/test_cli.py).
"""
from __future__ import annotations

import dataclasses
import types

KINDS = ("close", "bitwise", "exact", "topk")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tolerance:
  """How one stage is judged.

  Attributes:
    kind: "close" (rel_fro and abs_scaled bounds), "bitwise" (equal bits),
      "exact" (equal integers or booleans), or "topk" (top-k indices; see
      compare.compare_topk: mismatches pass only as near-ties, and `abs_scaled` is
      the near-tie bound on the logit gap, relative to the row's max |logit|).
    rel_fro: bound on ||a - b||_F / ||b||_F ("close").
    abs_scaled: bound on max|a - b| / max|b| ("close"), or the near-tie bound ("topk").
    reason: one line saying where the bound comes from.
  """
  kind: str
  rel_fro: float | None = None
  abs_scaled: float | None = None
  reason: str

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    if self.kind == "close" and (self.rel_fro is None or self.abs_scaled is None):
      raise ValueError(f"a 'close' tolerance needs rel_fro and abs_scaled, got {self}")
    if self.kind == "topk" and self.abs_scaled is None:
      raise ValueError(f"a 'topk' tolerance needs abs_scaled (the near-tie bound), got {self}")

  def describe(self) -> str:
    if self.kind == "close":
      return f"fro<={self.rel_fro:.1e} abs<={self.abs_scaled:.1e}"
    if self.kind == "topk":
      return f"exact; near-tie gap<={self.abs_scaled:.1e}"
    return self.kind


# Stage keys shared by every table. Gradient stages are grouped: grad_router covers
# router.weight and router.bias, grad_experts the four expert tensors.
STAGES = ("router_logits", "expert_indices", "expert_weights", "dispatched", "dropped",
          "expert_out", "combine", "output", "grad_x", "grad_router", "grad_experts")

_BITWISE = Tolerance(kind="bitwise", reason="pure data movement of identical x: equal bits")
_DROPPED = Tolerance(kind="exact", reason="same indices, same stable order, same C: same set")

FLOAT32 = types.MappingProxyType({
    "router_logits": Tolerance(
        kind="close", rel_fro=1e-5, abs_scaled=1e-5,
        reason="one dot over H<=4096 summed in another order: u*sqrt(H) <= 3.8e-6, x2.5"),
    "expert_indices": Tolerance(
        kind="topk", abs_scaled=2e-5,
        reason="a swap is a near-tie when the logit gap is within both sides' logit error (2x)"),
    "expert_weights": Tolerance(
        kind="close", rel_fro=1e-5, abs_scaled=1e-5,
        reason="softmax over K logits has condition ~1: inherits the logit bound"),
    "dispatched": _BITWISE,
    "dropped": _DROPPED,
    "expert_out": Tolerance(
        kind="close", rel_fro=5e-5, abs_scaled=5e-5,
        reason="dots over H then I: u*(sqrt(H)+sqrt(I)) <= 7.7e-6, GLU gain <=2, x3"),
    "combine": Tolerance(
        kind="close", rel_fro=5e-5, abs_scaled=5e-5,
        reason="expert_out plus a K-term f32 sum (K*u, negligible): the expert_out bound"),
    "output": Tolerance(
        kind="close", rel_fro=5e-5, abs_scaled=5e-5,
        reason="end-to-end layer on rows routed alike: the combine bound"),
    "grad_x": Tolerance(
        kind="close", rel_fro=1e-4, abs_scaled=1e-4,
        reason="backward through down, GLU', gate_up and router: twice the forward chain"),
    "grad_router": Tolerance(
        kind="close", rel_fro=1e-4, abs_scaled=1e-4,
        reason="grad_x's chain, then a T<=512 sum of cancelling terms: + u*T = 3e-5"),
    "grad_experts": Tolerance(
        kind="close", rel_fro=1e-4, abs_scaled=1e-4,
        reason="backward chain plus a sum over the expert's tokens (<=T): as grad_router"),
})

# fp32 at each framework's default precision: JAX may use TF32 (u = 2^-11) on GPU,
# torch's default fp32 matmul does not. Same model as FLOAT32 with the TF32 u; on CPU
# both are plain fp32 and these rows match the FLOAT32 ones.
FLOAT32_DEFAULT = types.MappingProxyType({
    "router_logits": Tolerance(
        kind="close", rel_fro=2e-3, abs_scaled=4e-3,
        reason="TF32 rounds x and W to 11 bits: ~u_tf32 per logit, x4/x8"),
    "expert_indices": Tolerance(
        kind="topk", abs_scaled=8e-3,
        reason="near-tie when the gap is within both sides' logit error (2x)"),
    "expert_weights": Tolerance(
        kind="close", rel_fro=2e-3, abs_scaled=4e-3,
        reason="softmax over K logits has condition ~1: inherits the logit bound"),
    "dispatched": _BITWISE,
    "dropped": _DROPPED,
    "expert_out": Tolerance(
        kind="close", rel_fro=5e-3, abs_scaled=1e-2,
        reason="two TF32 GEMMs and the GLU: ~3*u_tf32, x3"),
    "combine": Tolerance(
        kind="close", rel_fro=5e-3, abs_scaled=1e-2,
        reason="expert_out plus an f32 K-term sum"),
    "output": Tolerance(
        kind="close", rel_fro=5e-3, abs_scaled=1e-2,
        reason="the combine bound"),
    "grad_x": Tolerance(
        kind="close", rel_fro=1e-2, abs_scaled=2e-2,
        reason="backward: twice the forward TF32 chain"),
    "grad_router": Tolerance(
        kind="close", rel_fro=1e-2, abs_scaled=2e-2,
        reason="TF32 backward chain; the T-sum is in f32"),
    "grad_experts": Tolerance(
        kind="close", rel_fro=1e-2, abs_scaled=2e-2,
        reason="TF32 backward chain; the token sums are in f32"),
})

BFLOAT16 = types.MappingProxyType({
    "router_logits": Tolerance(
        kind="close", rel_fro=8e-3, abs_scaled=1.6e-2,
        reason="torch stores bf16 logits (and adds the bias in bf16): <=2u each; JAX keeps f32"),
    "expert_indices": Tolerance(
        kind="topk", abs_scaled=3.2e-2,
        reason="bf16 rounding creates exact ties on the torch side: near-tie within 2x logit bound"),
    "expert_weights": Tolerance(
        kind="close", rel_fro=1.6e-2, abs_scaled=1.6e-2,
        reason="logit error (<=2u) through softmax, then a bf16 rounding of w (u): 4u"),
    "dispatched": _BITWISE,
    "dropped": _DROPPED,
    "expert_out": Tolerance(
        kind="close", rel_fro=3e-2, abs_scaled=6e-2,
        reason="torch rounds gate_up, +bias, ~4 GLU ops, down, +bias to bf16: ~8 roundings"),
    "combine": Tolerance(
        kind="close", rel_fro=3e-2, abs_scaled=6e-2,
        reason="expert_out plus bf16 w*out and a bf16 K-term sum (~2 roundings, in quadrature)"),
    "output": Tolerance(
        kind="close", rel_fro=3e-2, abs_scaled=6e-2,
        reason="the combine bound, on rows routed alike"),
    "grad_x": Tolerance(
        kind="close", rel_fro=5e-2, abs_scaled=1e-1,
        reason="bf16 backward: ~2x the forward's roundings, each <=u"),
    "grad_router": Tolerance(
        kind="close", rel_fro=6e-2, abs_scaled=1.2e-1,
        reason="grad_x's chain, then a T-term sum of cancelling terms stored in bf16"),
    "grad_experts": Tolerance(
        kind="close", rel_fro=5e-2, abs_scaled=1e-1,
        reason="bf16 backward chain; token sums accumulate in f32 inside the GEMMs"),
})

TOLERANCES = types.MappingProxyType({
    "float32": FLOAT32,
    "float32-default": FLOAT32_DEFAULT,
    "bfloat16": BFLOAT16,
})


def table_name(dtype: str, precision: str) -> str:
  """The table for a run: "float32" (highest), "float32-default" or "bfloat16"."""
  if dtype == "bfloat16":
    return "bfloat16"
  if precision == "default":
    return "float32-default"
  return "float32"


def stage_key(stage: str) -> str:
  """The table entry of a stage: grad:router.* -> grad_router, grad:experts.* -> grad_experts."""
  if stage == "grad:x":
    return "grad_x"
  if stage.startswith("grad:router."):
    return "grad_router"
  if stage.startswith("grad:experts."):
    return "grad_experts"
  if stage not in STAGES:
    raise ValueError(f"stage must be one of {STAGES} or grad:<name>, got {stage!r}")
  return stage


def lookup(dtype: str, precision: str, stage: str) -> Tolerance:
  """The tolerance of `stage` for a run in `dtype` at `precision`."""
  return TOLERANCES[table_name(dtype, precision)][stage_key(stage)]
