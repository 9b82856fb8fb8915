"""Runs one catalogue case: shared weights and inputs, JAX and every reference, stage by stage.

For each case: the weights are generated (moe_torch_ref.weights), saved to one
safetensors file, and loaded from that file by both sides (MoELayer.from_safetensors
and weights.load + moe_torch_ref.create). x [T, H] and a float32 cotangent [T, H]
are drawn once with fixed seeds and handed to every implementation; gradients are
those of sum(y * cot).

Stages compared (JAX vs each reference; "n/a" where the reference exposes nothing):
  router_logits, expert_indices (see compare.compare_topk), expert_weights (rows
  routed alike), dispatched (bitwise; dropless JAX rows are re-binned into the
  reference's [E, C, H] layout), dropped (the set of dropped slots), expert_out,
  combine (the layer's y from the staged pipeline), output (moe_forward's y on rows
  routed and dropped alike), grad:x and grad:<weight>.
Where routing differs (only ever at near-ties), the stages from dispatched on run
on the reference's indices (jax_side), so each stage is judged like for like.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable

import numpy as np
import torch

from moe_jax.convert import STATE_DICT_NAMES, to_numpy
from moe_torch_ref import weights as weights_lib
from parity import compare, jax_side, torch_side
from parity.cases import Case
from parity.tolerances import lookup

COTANGENT_SEED = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class Row:
  """One line of the report: case x precision x implementation pair x stage."""
  case: str
  precision: str
  jax_impl: str
  torch_impl: str
  stage: str
  status: str
  max_abs: float | None = None
  max_rel: float | None = None
  rel_fro: float | None = None
  ref_max: float | None = None
  tolerance: str = ""
  note: str = ""

  @property
  def failed(self) -> bool:
    return self.status in ("FAIL", "error")


def precision_modes(case: Case, default_precision: bool) -> list[str]:
  """"highest" for fp32 parity (+ "default" when asked); bf16 has the one mode "bf16"."""
  if case.dtype == "bfloat16":
    return ["bf16"]
  return ["highest", "default"] if default_precision else ["highest"]


def write_weights(case: Case, directory: pathlib.Path) -> pathlib.Path:
  """Generates the case's weights and saves them (+ JSON sidecar); returns the file."""
  config = weights_lib.WeightConfig(
      num_experts=case.experts, top_k=case.top_k, hidden_size=case.hidden,
      intermediate_size=case.intermediate, dtype=case.dtype)
  state_dict = weights_lib.generate(config, case.scheme)
  if case.tied_router:
    for name in ("router.weight", "router.bias"):
      tensor = state_dict[name].clone()
      tensor[1::2] = tensor[0::2]  # expert 2j+1 scores exactly as expert 2j
      state_dict[name] = tensor
  path = directory / f"{case.name}.safetensors"
  weights_lib.save(path, state_dict, config)
  return path


def make_inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
  """x [T, H] in the case's dtype (randn * scale, drawn in f32 on the CPU) and cot [T, H] f32."""
  gen = torch.Generator().manual_seed(case.input_seed)
  x = torch.randn(case.batch, case.seq, case.hidden, generator=gen) * case.input_scale
  x = x.to(weights_lib.DTYPES[case.dtype]).reshape(case.tokens, case.hidden)
  cot = torch.randn(case.tokens, case.hidden, generator=torch.Generator().manual_seed(COTANGENT_SEED))
  return x, cot


def to_torch(value, device: torch.device) -> torch.Tensor:
  """A JAX array as a torch tensor on `device` (zero-copy through DLPack where possible)."""
  try:
    tensor = torch.from_dlpack(value)
  except Exception:  # pylint: disable=broad-except  # no DLPack path: go through the host
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
      tensor = torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    else:
      tensor = torch.from_numpy(array.copy())
  return tensor.to(device)


def rebin(rows: torch.Tensor, tokens_per_expert: torch.Tensor, capacity: int):
  """Expert-sorted rows [M, H] -> ([E, C, H] zero-padded, [E, C] bool mask of filled slots)."""
  e = tokens_per_expert.shape[0]
  tpe = tokens_per_expert.to(rows.device, torch.int64)
  starts = torch.cumsum(tpe, 0) - tpe  # [E]
  experts = torch.repeat_interleave(torch.arange(e, device=rows.device), tpe)  # [M]
  pos = torch.arange(rows.shape[0], device=rows.device) - starts[experts]
  buf = rows.new_zeros(e * capacity, rows.shape[1])
  buf[experts * capacity + pos] = rows
  mask = torch.arange(capacity, device=rows.device)[None, :] < tpe[:, None]  # [E, C]
  return buf.view(e, capacity, rows.shape[1]), mask


class _Comparer:
  """Compares one JAX run with one reference run and collects the rows."""

  def __init__(self, case: Case, precision: str, jax_impl: str, torch_impl: str):
    self.case, self.precision = case, precision
    self.key = dict(case=case.name, precision=precision, jax_impl=jax_impl, torch_impl=torch_impl)
    self.rows: list[Row] = []

  def tol(self, stage):
    return lookup(self.case.dtype, self.precision, stage)

  def add(self, stage: str, verdict: compare.Verdict | None, note: str = ""):
    if verdict is None:
      self.rows.append(Row(**self.key, stage=stage, status="n/a", note=note))
      return
    tol = self.tol(stage)
    self.rows.append(Row(**self.key, stage=stage, status="pass" if verdict.passed else "FAIL",
                         max_abs=verdict.max_abs, max_rel=verdict.max_rel,
                         rel_fro=verdict.rel_fro, ref_max=verdict.ref_max,
                         tolerance=tol.describe(), note=verdict.note))


def _routing(cmp: _Comparer, own: dict, ref: dict) -> np.ndarray:
  """router_logits, expert_indices, expert_weights; returns [T] rows routed alike."""
  dev = torch_side.device()
  cmp.add("router_logits", compare.compare_close(
      to_torch(own["router_logits"], dev), ref["router_logits"], cmp.tol("router_logits")))
  topk = compare.compare_topk(
      np.asarray(own["expert_indices"]), to_numpy(ref["expert_indices"]),
      np.asarray(own["router_logits"]), cmp.tol("expert_indices"),
      unspecified_ties=cmp.key["torch_impl"] in torch_side.UNSPECIFIED_TIE_BREAK)
  cmp.add("expert_indices", topk.verdict)
  agree = topk.agree
  if agree.any():
    cmp.add("expert_weights", compare.compare_close(
        to_torch(own["expert_weights"], dev), ref["expert_weights"], cmp.tol("expert_weights"),
        agree, note=f"{int(agree.sum())}/{agree.size} rows routed alike"))
  else:
    cmp.add("expert_weights", None, "no row routed alike")
  return agree


def _dispatch(cmp: _Comparer, side: jax_side.JaxSide, st: dict, ref: dict, note: str) -> None:
  """dispatched (bitwise), expert_out and dropped, where the reference exposes them."""
  case, dev, name = cmp.case, torch_side.device(), cmp.key["torch_impl"]
  full = case.stages == "all"
  if "dispatched" not in ref:
    cmp.add("dispatched", None, f"{name} exposes no dispatched buffer")
    cmp.add("dropped", None, f"{name} exposes no dropped slots (dropless)")
    if full:
      cmp.add("expert_out", None, f"{name} exposes no per-expert output")
    return
  ref_c = int(ref["capacity"])
  tpe = to_torch(st["tokens_per_expert"], dev)
  jax_c = side.config.capacity(case.tokens)
  jax_c = int(tpe.max()) if jax_c is None else jax_c  # dropless: the fullest expert
  if jax_c != ref_c:
    why = f"capacity C={jax_c} != reference C={ref_c}"
    cmp.add("dispatched", compare.Verdict(passed=False, note=why))
    if full:
      cmp.add("expert_out", None, why)
  else:
    buf, mask = to_torch(st["dispatched"], dev), None
    if case.dropless:
      buf, mask = rebin(buf, tpe, ref_c)
    cmp.add("dispatched", compare.compare_bitwise(buf, ref["dispatched"], note=note))
    if full:
      out, ref_out, what = to_torch(st["expert_out"], dev), ref["expert_out"], note
      if case.dropless:
        out, _ = rebin(out, tpe, ref_c)
        out, ref_out = out[mask], ref_out[mask.to(ref_out.device)]
        what = "; ".join(p for p in ("filled slots only", note) if p)
      cmp.add("expert_out", compare.compare_close(out, ref_out, cmp.tol("expert_out"), note=what))
  cmp.add("dropped", compare.compare_exact(~np.asarray(st["keep"]), to_numpy(ref["dropped"]),
                                           "dropped slots", note=note))


def _outputs(cmp: _Comparer, own: dict, st: dict, ref: dict, agree: np.ndarray,
             note: str) -> None:
  """output (moe_forward, rows routed and dropped alike) and every gradient."""
  dev, name = torch_side.device(), cmp.key["torch_impl"]
  # A token's output depends only on its own experts, drops and weights: compare the
  # rows that JAX's own run routed, and dropped, as the reference did (with a capacity,
  # one token routed elsewhere can shift which later tokens drop).
  alike, what = agree, "routed"
  if "dropped" in ref:
    alike = agree & (np.asarray(own["keep"]) == ~to_numpy(ref["dropped"])).all(axis=1)
    what = "routed and dropped"
  if alike.any():
    cmp.add("output", compare.compare_close(
        to_torch(own["output"], dev), ref["y"], cmp.tol("output"), alike,
        note=f"moe_forward; {int(alike.sum())}/{alike.size} rows {what} alike"))
  else:
    cmp.add("output", None, f"no row {what} alike")
  for wname in ("x",) + STATE_DICT_NAMES:
    key = "grad:" + wname
    if ref.get(key) is None:
      cmp.add(key, None, f"{name} has no gradient for {wname}")
    else:
      cmp.add(key, compare.compare_close(to_torch(st[key], dev), ref[key], cmp.tol(key),
                                         note=note))


def _compare(cmp: _Comparer, side: jax_side.JaxSide, own: dict | None, ref: dict,
             x_np: np.ndarray, cot_np: np.ndarray, forced_cache: dict) -> None:
  """Every stage of one JAX run against one reference run."""
  full = cmp.case.stages == "all"
  ref_out = ref_w = None
  if not full:  # dispatch/combine: the combine runs on the reference's expert output
    ref_out, ref_w = to_numpy(ref["expert_out"]), to_numpy(ref["expert_weights"])
    own = side.run_dispatch_combine(x_np, ref_out, ref_w)
  agree = _routing(cmp, own, ref)
  st, note = own, ""
  if not agree.all():
    forced = to_numpy(ref["expert_indices"]).astype(np.int32)
    note = f"routed by the reference's indices ({int((~agree).sum())} rows differ)"
    key = (forced.tobytes(), "" if full else cmp.key["torch_impl"])
    if key not in forced_cache:
      forced_cache[key] = (side.run(x_np, cot_np, forced) if full
                           else side.run_dispatch_combine(x_np, ref_out, ref_w, forced))
    st = forced_cache[key]
  _dispatch(cmp, side, st, ref, note)
  what = "" if full else "on the reference's expert_out and weights"
  cmp.add("combine", compare.compare_close(
      to_torch(st["combine"], torch_side.device()), ref["y"], cmp.tol("combine"),
      note="; ".join(p for p in (what, note) if p)))
  if full:
    _outputs(cmp, own, st, ref, agree, note)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseResult:
  case: Case
  rows: list
  seconds: float


def run_case(case: Case, *, torch_impls: list[str], jax_impls: list[str],
             default_precision: bool = False, inject: str | None = None,
             workdir: pathlib.Path, on_step: Callable[[str], None] | None = None) -> CaseResult:
  """Runs `case` against every reference in torch_impls, for every JAX implementation.

  Args:
    case: the case (already small if a small run).
    torch_impls: reference names (moe_torch_ref.IMPLEMENTATIONS subset).
    jax_impls: "xla" and/or "pallas".
    default_precision: also run fp32 at each framework's default precision.
    inject: a jax_side.INJECTIONS fault (test hook) or None.
    workdir: where the weights file goes.
    on_step: called with a label after each reference has run.
  """
  start = time.perf_counter()
  rows: list[Row] = []
  path = write_weights(case, workdir)
  state_dict, weight_config = weights_lib.load(path)
  x, cot = make_inputs(case)
  x_np, cot_np = to_numpy(x), cot.numpy()
  dev = torch_side.device()
  full = case.stages == "all"
  try:
    jax_config, jax_params = jax_side.load(path, case, weight_config)
  except Exception as exc:  # pylint: disable=broad-except
    jax_impls = []
    rows.append(Row(case=case.name, precision="-", jax_impl="-", torch_impl="-", stage="jax",
                    status="error", note=f"loading the weights: {type(exc).__name__}: {exc}"[:300]))
  for precision in precision_modes(case, default_precision):
    sides, owns = {}, {}
    forced_caches = {impl: {} for impl in jax_impls}  # forced JAX runs, shared by references
    for impl in jax_impls:
      try:
        sides[impl] = jax_side.JaxSide(jax_config, jax_params, jax_side.JaxOptions(
            implementation=impl, precision=precision, inject=inject))
        owns[impl] = sides[impl].run(x_np, cot_np) if full else None
      except Exception as exc:  # pylint: disable=broad-except
        sides.pop(impl, None)
        rows.append(Row(case=case.name, precision=precision, jax_impl=impl, torch_impl="-",
                        stage="jax", status="error", note=f"{type(exc).__name__}: {exc}"[:300]))
    for name in torch_impls:
      reason = torch_side.skip_reason(case, name)
      if reason:
        rows.append(Row(case=case.name, precision=precision, jax_impl="-", torch_impl=name,
                        stage="-", status="skip", note=reason))
        if on_step:
          on_step(f"{case.name}/{precision}/{name}")
        continue
      phase, impl = "torch", "-"  # where an exception came from, for its error row
      try:
        with torch_side.precision(precision), torch_side.cpu_threads():
          module = torch_side.build(name, state_dict, case, weight_config)
          ref = torch_side.run(module, x.to(dev), cot.to(dev) if full else None)
        del module
        phase = "compare"
        for impl, side in sides.items():
          cmp = _Comparer(case, precision, impl, name)
          _compare(cmp, side, owns[impl], ref, x_np, cot_np, forced_caches[impl])
          rows.extend(cmp.rows)
      except Exception as exc:  # pylint: disable=broad-except
        rows.append(Row(case=case.name, precision=precision, jax_impl=impl, torch_impl=name,
                        stage=phase, status="error", note=f"{type(exc).__name__}: {exc}"[:300]))
      finally:
        ref = None
        if torch.cuda.is_available():
          torch.cuda.empty_cache()
      if on_step:
        on_step(f"{case.name}/{precision}/{name}")
  path.unlink(missing_ok=True)
  weights_lib.sidecar_path(path).unlink(missing_ok=True)
  return CaseResult(case=case, rows=rows, seconds=time.perf_counter() - start)
