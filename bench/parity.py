"""Parity of every timed row against a reference row of the other framework.

Each row's output on the parity input (rotation 0) is saved before it is timed. After
both frameworks have run a config, every row is compared with its reference:

  parity_rel_err = max |out - ref| / max |ref|   over the compared elements, the
  largest over the row's outputs (y, dx, d rows, d weights, routing weights).

References (the first that ran): JAX rows against torch `binned` (binned variants),
torch `grouped` (dropless) or the matching torch stage; torch rows against JAX
`xla/binned`, `xla/dropless` or the matching stage. If the other framework did not
run, a reference of the same framework stands in. Routing rows are compared with a
float64 NumPy oracle on the parity token subset instead: the router is cheap to
compute exactly, and a bf16 router's backward (softmax Jacobian, a difference of
nearly equal terms) is too inexact in either framework to serve as the reference.

Components (pack, combine, experts) get identical inputs in both frameworks and are
compared element by element; pack is data movement and must match bitwise. Rows that
route by themselves (routing, layer) may choose different experts for a token when
two logits are within rounding of each other (PyTorch rounds bf16 logits; moe_jax
keeps them in fp32). Such tokens are left out of the error, and every one of them in
the parity subset must be a near-tie of the float64 router logits; a token routed
differently without a near-tie fails the row. Binned rows also compare which slots
were kept, since a routing flip can move a slot across the capacity.
"""
from __future__ import annotations

import numpy as np

TOLERANCES = {
    "float32": (1e-4, "fp32 on both sides without TF32: only the summation order differs"),
    "bfloat16": (3e-2, "bf16 keeps 8 significant bits (eps 2**-7), and each framework "
                       "rounds intermediates (GLU output, expert rows, routing weights) to "
                       "bf16 at different points"),
}
# A routing flip is a near-tie if both choices are within this fraction of the
# token's largest |logit| of the true K-th logit (bf16 logits carry 2**-9 relative error).
NEAR_TIE = {"float32": 1e-5, "bfloat16": 2.0**-6}
# Outputs that are pure data movement: they must be equal bit for bit.
EXACT = {("pack", "out")}


def reference_candidates(framework: str, component: str, variant: str | None, impl: str
                         ) -> list[tuple[str, str]]:
  """(framework, impl) of the rows that may serve as this row's reference, best first."""
  jax_ref = {
      "routing": ["xla"],
      "experts": ["binned"] if variant == "binned" else ["xla/dropless", "pallas/dropless"],
  }.get(component, [f"xla/{variant}", f"pallas/{variant}"])
  torch_ref = {
      "routing": ["sort", "topk"],
      "pack": [variant],
      "combine": [variant],
      "experts": ["binned"] if variant == "binned" else ["grouped"],
      "layer": (["binned", "binned_loop"] if variant == "binned" else
                ["grouped", "grouped+compile", "gpt_oss_loop", "transformers/eager",
                 "gpt_oss_dense"]),
  }[component]
  other = [("torch", i) for i in torch_ref] if framework == "jax" else [("jax", i) for i in jax_ref]
  same = [("jax", i) for i in jax_ref] if framework == "jax" else [("torch", i) for i in torch_ref]
  if framework == "torch" and component == "layer" and variant == "binned":
    same = [("torch", "binned_loop"), ("torch", "binned")]
  return other + [s for s in same if s != (framework, impl)]


def routing_oracle(router: dict, top_k: int, dw: np.ndarray | None) -> dict:
  """The router in float64 on the parity subset: indices, weights and (with a weights
  cotangent dw [n, K]) the input gradient dx [n, H]."""
  x = np.asarray(router["x"], np.float64)
  w_r = np.asarray(router["router_weight"], np.float64)
  logits = x @ w_r.T + np.asarray(router["router_bias"], np.float64)  # [n, E]
  idx = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
  top = np.take_along_axis(logits, idx, axis=1)
  e = np.exp(top - top.max(axis=1, keepdims=True))
  w = e / e.sum(axis=1, keepdims=True)  # [n, K]
  out = dict(indices=idx.astype(np.int32), weights=w)
  if dw is not None:
    dw = np.asarray(dw, np.float64)
    d_top = w * (dw - np.sum(w * dw, axis=1, keepdims=True))  # softmax VJP
    d_logits = np.zeros_like(logits)
    np.put_along_axis(d_logits, idx, d_top, axis=1)
    out["dx"] = d_logits @ w_r
  return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
  """max|a - b| / max|b| (inf if a is not finite or shapes differ; 0 for empty)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or not np.all(np.isfinite(a)):
    return float("inf")
  if a.size == 0:
    return 0.0
  scale = np.abs(b).max()
  diff = np.abs(a - b).max()
  return float(diff / scale) if scale > 0 else (0.0 if diff == 0 else float("inf"))


def keep_codes(indices: np.ndarray, num_experts: int, capacity: int | None) -> np.ndarray:
  """[T, K] per-token sorted codes: expert e if its slot was kept, e + E if dropped.

  Slots are ranked within their expert in slot order (t*K + k), earliest first, and
  those ranked >= capacity are dropped; capacity None keeps every slot.
  """
  indices = np.asarray(indices, np.int64)
  if capacity is None:
    return np.sort(indices, axis=1)
  t, k = indices.shape
  flat = indices.reshape(-1)
  order = np.argsort(flat, kind="stable")
  counts = np.bincount(flat, minlength=num_experts)
  starts = np.cumsum(counts) - counts
  rank = np.empty_like(flat)
  rank[order] = np.arange(flat.size) - starts[flat[order]]
  codes = np.where(rank < capacity, flat, flat + num_experts).reshape(t, k)
  return np.sort(codes, axis=1)


def _margins(logits: np.ndarray, indices: np.ndarray, top_k: int) -> np.ndarray:
  """How far the worst chosen logit lies below the true K-th largest, per token."""
  kth = -np.sort(-logits, axis=1)[:, top_k - 1]
  chosen = np.take_along_axis(logits, indices.astype(np.int64), axis=1).min(axis=1)
  return kth - chosen


def compare(row: dict, ref: dict, *, component: str, dtype: str, num_experts: int,
            capacity: int | None, router: dict | None) -> dict:
  """Parity figures of one row against its reference.

  Args:
    row, ref: the saved arrays of the row and of its reference (same keys).
    component: the row's component.
    dtype: the config dtype (picks the tolerance).
    num_experts: E.
    capacity: C for binned layer rows, else None.
    router: {"sub", "x", "router_weight", "router_bias"} of the parity input (for the
      near-tie check of routing and layer rows), or None.

  Returns:
    parity_rel_err, parity_detail {output: err}, parity_tol, parity_ok,
    routing_mismatch_frac, parity_unexplained_flips, parity_tokens_compared.
  """
  tol = TOLERANCES[dtype][0]
  out: dict = dict(routing_mismatch_frac=None, parity_unexplained_flips=None,
                   parity_tokens_compared=None)
  detail: dict[str, float] = {}
  keys = [k for k in row if k in ref and k != "indices"]
  ok = True
  if "indices" in row and "indices" in ref:
    ia, ib = np.asarray(row["indices"]), np.asarray(ref["indices"])
    same = np.all(np.sort(ia, 1) == np.sort(ib, 1), axis=1)
    cap = capacity if component == "layer" else None
    same_keep = np.all(keep_codes(ia, num_experts, cap) == keep_codes(ib, num_experts, cap), 1)
    match = same & same_keep
    out["routing_mismatch_frac"] = float(1.0 - match.mean())
    sub = router["sub"] if router is not None else np.arange(ia.shape[0])
    flips = 0
    if router is not None and not same[sub].all():
      x = np.asarray(router["x"], np.float64)
      logits = x @ np.asarray(router["router_weight"], np.float64).T + np.asarray(
          router["router_bias"], np.float64)
      bad = ~same[sub]
      delta = NEAR_TIE[dtype] * np.abs(logits).max(axis=1) + 1e-6
      k = ia.shape[1]
      near = ((_margins(logits, ia[sub], k) <= delta) & (_margins(logits, ib[sub], k) <= delta))
      flips = int(np.sum(bad & ~near))
    if same.all() and not same_keep.all():
      flips += int(np.sum(~same_keep))  # a slot dropped differently with no flip to explain it
    out["parity_unexplained_flips"] = flips
    ok = ok and flips == 0
    for key in keys:
      a, b = np.asarray(row[key]), np.asarray(ref[key])
      if key == "weights":  # [T, K], align by expert id
        oa, ob = np.argsort(ia, 1), np.argsort(ib, 1)
        a, b = np.take_along_axis(a, oa, 1)[same], np.take_along_axis(b, ob, 1)[same]
      elif a.shape[0] == sub.size:  # rows of the token subset
        a, b = a[match[sub]], b[match[sub]]
      detail[key] = rel_err(a, b)
    out["parity_tokens_compared"] = int(match[sub].sum())
  else:
    for key in keys:
      detail[key] = rel_err(row[key], ref[key])
  for key, err in detail.items():
    limit = 0.0 if (component, key) in EXACT else tol
    ok = ok and err <= limit
  out.update(parity_rel_err=max(detail.values()) if detail else None, parity_detail=detail,
             parity_tol=tol, parity_ok=bool(ok) if detail else None)
  return out
