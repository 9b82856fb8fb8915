"""FLOP and byte counts per row, load statistics, and the figures derived from them.

Every formula is stated in FORMULAS and written into the rows, so a table can be
checked by hand. Notation: T tokens, H hidden, I intermediate, E experts, K top-k,
b bytes per element of the config dtype (4 fp32, 2 bf16).

FLOPs are nominal: every row of a (config, component, mode) is credited the same
useful work, T*K routed rows, whatever it pads (binned capacity) or drops, or
computes in excess (gpt_oss_dense runs every token through every expert), so
TFLOP/s ranks implementations exactly as their times do. A backward pass computes
two GEMMs (dX, dW) per forward GEMM, hence fwd+bwd = 3 x fwd.

Strict bytes follow moe-routing-bench: pack and combine each move (1 + K)*H*b per
token (pack reads a token once and writes K copies; combine reads K rows and writes
one), so pack + combine = (2 + 2K)*H*b per token.

Minimum bytes (the copy floor) count what any implementation must move at least:
the weights once and the activations in and out; intermediates a fused kernel could
keep on chip are not counted.
"""
from __future__ import annotations

import numpy as np

from bench.configs import BenchConfig

FORMULAS = {
    "flop": {
        "routing": "2*T*H*E (router GEMM; top-k and softmax not counted)",
        "pack": None,
        "combine": None,
        "experts": "6*T*K*H*I (gate_up 2*T*K*H*2I + down 2*T*K*I*H; GLU not counted)",
        "layer": "6*T*K*H*I + 2*T*H*E",
        "fwd+bwd": "3 x fwd",
    },
    "bytes_strict": {
        "pack": "(1+K)*H*b*T (fwd); 2x that for fwd+bwd (the VJP is a combine)",
        "combine": "(1+K)*H*b*T (fwd); 3x that for fwd+bwd (row gather + slot dots)",
        "pack+combine": "(2+2K)*H*b per token",
    },
    "bytes_min": {
        "routing": "(T*H + E*H)*b",
        "pack": "= strict",
        "combine": "= strict",
        "experts": "(3*E*H*I + 2*T*K*H)*b",
        "layer": "(3*E*H*I + E*H + 2*T*H)*b",
        "fwd+bwd": "3 x fwd (weights read twice and their gradients written once)",
    },
}


def flop(cfg: BenchConfig, component: str, mode: str) -> float | None:
  """Nominal FLOPs of one call (None for pack and combine: data movement)."""
  t, h, i, e, k = (cfg.num_tokens, cfg.hidden_size, cfg.intermediate_size, cfg.num_experts,
                   cfg.top_k)
  fwd = {
      "routing": 2 * t * h * e,
      "pack": None,
      "combine": None,
      "experts": 6 * t * k * h * i,
      "layer": 6 * t * k * h * i + 2 * t * h * e,
  }[component]
  if fwd is None:
    return None
  return float(fwd * (3 if mode == "fwd+bwd" else 1))


def bytes_strict(cfg: BenchConfig, component: str, mode: str) -> float | None:
  """moe-routing-bench strict bytes of one call (pack and combine only)."""
  per_token = (1 + cfg.top_k) * cfg.hidden_size * cfg.dtype_bytes
  factor = {"pack": (1, 2), "combine": (1, 3)}.get(component)
  if factor is None:
    return None
  return float(per_token * cfg.num_tokens * factor[mode == "fwd+bwd"])


def bytes_min(cfg: BenchConfig, component: str, mode: str) -> float:
  """Minimum bytes any implementation must move in one call (the copy floor)."""
  t, h, i, e, k, b = (cfg.num_tokens, cfg.hidden_size, cfg.intermediate_size, cfg.num_experts,
                      cfg.top_k, cfg.dtype_bytes)
  if component in ("pack", "combine"):
    return bytes_strict(cfg, component, mode)
  fwd = {
      "routing": (t * h + e * h) * b,
      "experts": (3 * e * h * i + 2 * t * k * h) * b,
      "layer": (3 * e * h * i + e * h + 2 * t * h) * b,
  }[component]
  return float(fwd * (3 if mode == "fwd+bwd" else 1))


def load_stats(indices: np.ndarray, num_experts: int, capacity: int | None) -> dict:
  """Expert load of one routing.

  Args:
    indices: [T, K] expert ids.
    num_experts: E.
    capacity: C for a binned row, None for dropless (nothing dropped).

  Returns:
    tokens_per_expert (list of E ints), load_cv = std/mean of it (ddof=0), and
    drop_rate = sum_e max(0, n_e - C) / (T*K), the fraction of slots dropped.
  """
  counts = np.bincount(np.asarray(indices).reshape(-1), minlength=num_experts)
  mean = counts.mean()
  cv = float(counts.std() / mean) if mean > 0 else 0.0
  m = max(1, int(counts.sum()))
  drop = 0.0 if capacity is None else float(np.maximum(counts - capacity, 0).sum() / m)
  return dict(tokens_per_expert=[int(c) for c in counts], load_cv=cv, drop_rate=drop)


def derive(row: dict, cfg: BenchConfig, floors: dict) -> dict:
  """The figures that follow from a row's times, its formulas and the run's floors.

  Args:
    row: needs component, mode, wall_ms_median and kernel_ms_median (either may be None).
    cfg: its config.
    floors: {"matmul_tflops": {dtype: rate}, "copy_gbps": rate}, best measured this run.

  Returns:
    tokens_per_s, flop, tflops, bytes_strict, gbps_strict, bytes_min, gbps_min,
    floor_matmul_ms, floor_copy_ms, floor_ms, pct_matmul_floor, pct_copy_floor,
    pct_roofline (floor_ms / wall), pct_roofline_kernel (floor_ms / kernel time),
    and the formula strings.
  """
  comp, mode = row["component"], row["mode"]
  wall, kern = row.get("wall_ms_median"), row.get("kernel_ms_median")
  f, bs, bm = flop(cfg, comp, mode), bytes_strict(cfg, comp, mode), bytes_min(cfg, comp, mode)
  rate = (floors.get("matmul_tflops") or {}).get(cfg.dtype)
  bw = floors.get("copy_gbps")
  floor_mm = f / (rate * 1e12) * 1e3 if (f and rate) else None
  floor_cp = bm / (bw * 1e9) * 1e3 if bw else None
  known = [v for v in (floor_mm, floor_cp) if v is not None]
  floor = max(known) if known else None

  def per_s(amount, ms, unit):
    return amount / (ms * 1e-3) / unit if (amount is not None and ms) else None

  flop_formula = FORMULAS["flop"][comp]
  if flop_formula and mode == "fwd+bwd":
    flop_formula = f"3 * ({flop_formula})"
  out = dict(
      flop=f, flop_formula=flop_formula,
      bytes_strict=bs, bytes_min=bm,
      tokens_per_s=per_s(cfg.num_tokens, wall, 1.0),
      tflops=per_s(f, wall, 1e12),
      gbps_strict=per_s(bs, wall, 1e9),
      gbps_min=per_s(bm, wall, 1e9),
      floor_matmul_tflops=rate, floor_copy_gbps=bw,
      floor_matmul_ms=floor_mm, floor_copy_ms=floor_cp, floor_ms=floor,
  )
  out["pct_matmul_floor"] = (100 * out["tflops"] / rate) if (out["tflops"] and rate) else None
  out["pct_copy_floor"] = (100 * out["gbps_min"] / bw) if (out["gbps_min"] and bw) else None
  out["pct_roofline"] = (100 * floor / wall) if (floor and wall) else None
  out["pct_roofline_kernel"] = (100 * floor / kern) if (floor and kern) else None
  return out
