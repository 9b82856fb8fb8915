"""Metrics and verdicts: close, bitwise, exact and top-k comparisons.

Float metrics are computed in float64 on torch tensors (on the GPU when there is
one; a 2 GB gradient is not worth a trip to the host):
  max_abs  max |a - b|
  max_rel  max |a - b| / |b| over elements with |b| >= REL_FLOOR * max|b| (smaller
           elements measure cancellation, not the implementation, and are left out)
  rel_fro  ||a - b||_F / ||b||_F
A "close" verdict gates rel_fro and max_abs / max|b| (see tolerances.py).

Top-k verdict (compare_topk). JAX's own indices must first be a stable top-k of its
own logits (ties to the lower index); a row where they are not is a JAX tie-break
error, whatever the reference says. Then each row where JAX and the reference
disagree is classified by the largest logit gap |s[a] - s[b]| between the experts
the two chose at each differing position, s being JAX's float32 logits:
  exact tie   gap == 0: the reference broke a tie against the lower-index rule; a
              failure, except for references whose tie-break is unspecified
              (transformers' torch.topk), where it is counted and tolerated
  near-tie    0 < gap <= bound * max_e |s[t, e]|: within the two sides' logit error
              (e.g. a tie the reference's bf16 rounding created); tolerated, counted
  real        gap above that: a failure
Logits rank experts the same as softmax probabilities, so this also serves the
softmax_topk router.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from parity.tolerances import Tolerance

REL_FLOOR = 1e-3
CHUNK = 1 << 24  # elements per float64 pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
  """The outcome of one stage comparison.

  Attributes:
    passed: True or False.
    max_abs, max_rel, rel_fro: metrics (None where they do not apply).
    note: a short explanation (counts, masks, why it failed).
  """
  passed: bool
  max_abs: float | None = None
  max_rel: float | None = None
  rel_fro: float | None = None
  ref_max: float | None = None
  note: str = ""


def _check_shapes(actual: torch.Tensor, expected: torch.Tensor, what: str) -> str | None:
  if tuple(actual.shape) != tuple(expected.shape):
    return f"{what}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}"
  return None


def metrics(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, float, float]:
  """(max_abs, max_rel, rel_fro, max|expected|) in float64; empty tensors give zeros.

  Works through CHUNK elements at a time, so a 2 GB gradient needs no 8 GB of float64.
  """
  if expected.numel() == 0:
    return 0.0, 0.0, 0.0, 0.0
  a = actual.detach().reshape(-1)
  b = expected.detach().to(actual.device).reshape(-1)
  ref_max = max(float(c.abs().max()) for c in b.split(CHUNK))
  floor = REL_FLOOR * ref_max
  max_abs = max_rel = diff_sq = ref_sq = 0.0
  for ca, cb in zip(a.split(CHUNK), b.split(CHUNK)):
    ca, cb = ca.to(torch.float64), cb.to(torch.float64)
    diff = (ca - cb).abs()
    ref_abs = cb.abs()
    max_abs = max(max_abs, float(diff.max()))
    big = ref_abs >= floor
    if ref_max > 0 and bool(big.any()):
      max_rel = max(max_rel, float((diff[big] / ref_abs[big]).max()))
    diff_sq += float(torch.dot(diff, diff))
    ref_sq += float(torch.dot(cb, cb))
  if ref_max == 0 and max_abs > 0:
    max_rel = float("inf")
  if ref_sq > 0:
    rel_fro = math.sqrt(diff_sq / ref_sq)
  else:
    rel_fro = 0.0 if diff_sq == 0 else float("inf")
  return max_abs, max_rel, rel_fro, ref_max


def compare_close(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance,
                  row_mask: np.ndarray | None = None, note: str = "") -> Verdict:
  """Float comparison against a "close" tolerance, optionally on the rows in row_mask."""
  bad = _check_shapes(actual, expected, "close")
  if bad:
    return Verdict(passed=False, note=bad)
  if row_mask is not None:
    keep = torch.as_tensor(row_mask, device=actual.device)
    actual, expected = actual[keep], expected.to(actual.device)[keep]
  if not torch.isfinite(actual.detach()).all():
    return Verdict(passed=False, note="non-finite values on the JAX side")
  max_abs, max_rel, rel_fro, ref_max = metrics(actual, expected)
  why = []
  if not rel_fro <= tol.rel_fro:
    why.append(f"rel_fro {rel_fro:.2e} > {tol.rel_fro:.1e}")
  if not max_abs <= tol.abs_scaled * ref_max:
    scaled = max_abs / ref_max if ref_max > 0 else float("inf")
    why.append(f"max_abs / max abs ref {scaled:.2e} > {tol.abs_scaled:.1e}")
  passed = not why
  return Verdict(passed=passed, max_abs=max_abs, max_rel=max_rel, rel_fro=rel_fro,
                 ref_max=ref_max, note="; ".join(p for p in [note, *why] if p))


def _bits(t: torch.Tensor) -> torch.Tensor:
  """An integer view with the same bits (bf16 -> int16, f32 -> int32)."""
  ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
  return t.contiguous().view(ints[t.element_size()])


def compare_bitwise(actual: torch.Tensor, expected: torch.Tensor, note: str = "") -> Verdict:
  """Equal bits (dtype and shape included); metrics are reported for the failure case."""
  bad = _check_shapes(actual, expected, "bitwise")
  if bad:
    return Verdict(passed=False, note=bad)
  if actual.dtype != expected.dtype:
    return Verdict(passed=False, note=f"dtype {actual.dtype} != reference {expected.dtype}")
  expected = expected.to(actual.device)
  differ = int((_bits(actual) != _bits(expected)).sum())
  max_abs, max_rel, rel_fro, ref_max = metrics(actual, expected)
  text = f"{differ} of {actual.numel()} elements differ in bits" if differ else "bit-identical"
  return Verdict(passed=differ == 0, max_abs=max_abs, max_rel=max_rel, rel_fro=rel_fro,
                 ref_max=ref_max, note="; ".join(p for p in [note, text] if p))


def compare_exact(actual: np.ndarray, expected: np.ndarray, what: str, note: str = "") -> Verdict:
  """Equal integers or booleans."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  if actual.shape != expected.shape:
    return Verdict(passed=False, note=f"{what}: shape {actual.shape} != reference {expected.shape}")
  differ = int((actual != expected).sum())
  text = f"{differ} {what} differ" if differ else f"identical {what}"
  return Verdict(passed=differ == 0, note="; ".join(p for p in [note, text] if p))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopkOutcome:
  """Classified top-k agreement of one JAX run with one reference.

  Attributes:
    verdict: the stage verdict.
    agree: [T] bool, rows whose K indices agree position by position.
    counts: mismatched rows by class: near_tie, exact_tie_ok (tolerated exact ties),
      exact_tie_bad, real, jax_tie_break (rows where JAX is not a stable top-k of its
      own logits).
  """
  verdict: Verdict
  agree: np.ndarray
  counts: dict


def stable_topk(scores: np.ndarray, k: int) -> np.ndarray:
  """[T, E] -> [T, K] indices by descending score, equal scores to the lower index."""
  return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def compare_topk(jax_indices: np.ndarray, ref_indices: np.ndarray, jax_logits: np.ndarray,
                 tol: Tolerance, *, unspecified_ties: bool) -> TopkOutcome:
  """Classifies the top-k mismatches (see the module docstring).

  Args:
    jax_indices: [T, K] JAX's expert indices.
    ref_indices: [T, K] the reference's.
    jax_logits: [T, E] JAX's float32 logits.
    tol: the "topk" tolerance; tol.abs_scaled is the near-tie bound.
    unspecified_ties: the reference does not promise the lower-index tie-break.
  """
  ji, ri = np.asarray(jax_indices, np.int64), np.asarray(ref_indices, np.int64)
  s = np.asarray(jax_logits, np.float64)
  t, k = ji.shape
  if ri.shape != ji.shape:
    bad = Verdict(passed=False, note=f"indices: shape {ji.shape} != reference {ri.shape}")
    return TopkOutcome(verdict=bad, agree=np.zeros(t, bool), counts={})
  counts = dict(near_tie=0, exact_tie_ok=0, exact_tie_bad=0, real=0, jax_tie_break=0)
  jax_bad = (stable_topk(s, k) != ji).any(axis=1)  # [T]
  counts["jax_tie_break"] = int(jax_bad.sum())
  differ = ji != ri  # [T, K]
  agree = ~differ.any(axis=1)
  rows = np.nonzero(~agree)[0]
  scale = np.abs(s).max(axis=1)  # [T]
  max_gap_rel = 0.0
  for row in rows:
    if jax_bad[row]:
      continue  # JAX's own error, counted above; says nothing about the reference
    pos = np.nonzero(differ[row])[0]
    gap = float(np.abs(s[row, ji[row, pos]] - s[row, ri[row, pos]]).max())
    rel = gap / scale[row] if scale[row] > 0 else (0.0 if gap == 0 else float("inf"))
    max_gap_rel = max(max_gap_rel, rel)
    if gap == 0:
      counts["exact_tie_ok" if unspecified_ties else "exact_tie_bad"] += 1
    elif rel <= tol.abs_scaled:
      counts["near_tie"] += 1
    else:
      counts["real"] += 1
  passed = counts["real"] == 0 and counts["exact_tie_bad"] == 0 and counts["jax_tie_break"] == 0
  parts = [f"{len(rows)}/{t} rows differ"]
  labels = dict(near_tie="near-tie", exact_tie_ok="exact tie, reference tie-break unspecified",
                exact_tie_bad="exact tie broken against lower-index rule by reference",
                real="real (gap beyond near-tie bound)",
                jax_tie_break="JAX tie-break: not a stable lower-index top-k of its own logits")
  parts += [f"{counts[key]} {label}" for key, label in labels.items() if counts[key]]
  if len(rows):
    parts.append(f"max gap / max abs logit {max_gap_rel:.1e}")
  verdict = Verdict(passed=passed, note="; ".join(parts))
  return TopkOutcome(verdict=verdict, agree=agree, counts=counts)
