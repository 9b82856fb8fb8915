"""The one timing protocol, used unchanged for JAX and PyTorch.

A case is a callable `fn(*inputs[j])` over a list of rotated input sets, plus a
`sync(out)` that waits for `out` (JAX: block_until_ready; PyTorch: cuda.synchronize,
a no-op on the CPU). The protocol:

1. First call on inputs[0], synced and timed alone: `first_call_ms` (it includes
   torch.compile's compilation; JAX compiles ahead of time, reported apart).
2. `warmup` calls, each synced, cycling through the inputs; their median estimates
   the per-call time, which picks `inner` = calls per sample so that one sample lasts
   about `target_sample_ms` (1 <= inner <= max_inner).
3. `iters` samples. A sample is `inner` back-to-back calls on successive rotated
   inputs, then ONE sync; its value is elapsed / inner. This is wall time per call
   as a user sees it: host overhead and launch latency included, and overlapped
   the way back-to-back calls overlap. A call that takes `target_sample_ms` or more
   gets inner = 1, so its sample is one call and its sync: latency, not throughput.

Before each call the previous output is released, so two outputs of a large
fwd+bwd (its weight gradients) are never alive at once.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_ITERS = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class Protocol:
  """Timing parameters, identical for both frameworks.

  Attributes:
    warmup: synced warm-up calls after the first call.
    iters: timed samples (>= MIN_ITERS unless `quick`).
    rotate: input sets to cycle through (capped by memory, at least 2).
    target_sample_ms: wall time one sample aims for (sets `inner`).
    max_inner: most back-to-back calls per sample.
    quick: test mode; allows iters < MIN_ITERS and labels every row.
  """
  warmup: int = 5
  iters: int = MIN_ITERS
  rotate: int = 4
  target_sample_ms: float = 2.0
  max_inner: int = 64
  quick: bool = False

  def __post_init__(self):
    if self.warmup < 0:
      raise ValueError(f"warmup must be >= 0, got {self.warmup}")
    if self.iters < 1 or (self.iters < MIN_ITERS and not self.quick):
      raise ValueError(f"iters must be >= {MIN_ITERS} (or use --quick), got {self.iters}")
    if self.rotate < 1:
      raise ValueError(f"rotate must be >= 1, got {self.rotate}")
    if self.max_inner < 1 or not self.target_sample_ms > 0:
      raise ValueError("max_inner must be >= 1 and target_sample_ms > 0")


STAT_KEYS = ("median", "p95", "min", "max", "std", "mean")


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
  """Median, 95th percentile (linear interpolation), min, max, std (ddof=0), mean, n.

  Example:
    >>> summarize([1.0, 2.0, 3.0])["median"]
    2.0
  """
  a = np.asarray(samples_ms, dtype=np.float64)
  if a.size == 0:
    raise ValueError("summarize needs at least one sample")
  return dict(median=float(np.median(a)), p95=float(np.percentile(a, 95)), min=float(a.min()),
              max=float(a.max()), std=float(a.std()), mean=float(a.mean()), n=int(a.size))


@dataclasses.dataclass(frozen=True, kw_only=True)
class WallResult:
  """Outcome of `time_wall`.

  Attributes:
    first_out: the output of the first call (on inputs[0]); parity reads it.
    first_call_ms: the first call, synced.
    inner: back-to-back calls per sample.
    samples_ms: per-call time of each sample.
  """
  first_out: Any
  first_call_ms: float
  inner: int
  samples_ms: list[float]


def _call(fn, args, sync) -> tuple[Any, float]:
  t0 = time.perf_counter()
  out = fn(*args)
  sync(out)
  return out, (time.perf_counter() - t0) * 1e3


def time_wall(fn: Callable[..., Any], inputs: Sequence[tuple], sync: Callable[[Any], None],
              protocol: Protocol, *, first_out_hook: Callable[[Any], None] | None = None
              ) -> WallResult:
  """Times `fn` with the protocol of this module's docstring.

  Args:
    fn: the callable under test; `fn(*inputs[j])`.
    inputs: rotated input sets (at least one).
    sync: waits for an output of fn.
    protocol: warm-up, samples and inner-loop parameters.
    first_out_hook: called with the first output before anything else runs (the
      runner copies its parity arrays to the host there, so the output can be freed).

  Returns:
    WallResult; `first_out` is None when a hook consumed it.
  """
  if not inputs:
    raise ValueError("time_wall needs at least one input set")
  n = len(inputs)
  first_out, first_ms = _call(fn, inputs[0], sync)
  if first_out_hook is not None:
    first_out_hook(first_out)
    first_out = None
  warm = []
  out = None
  for i in range(protocol.warmup):
    out = None
    out, ms = _call(fn, inputs[(i + 1) % n], sync)
    warm.append(ms)
  estimate = float(np.median(warm)) if warm else first_ms
  inner = int(min(protocol.max_inner,
                  max(1, math.ceil(protocol.target_sample_ms / max(estimate, 1e-6)))))
  samples = []
  k = 0
  for _ in range(protocol.iters):
    t0 = time.perf_counter()
    for _ in range(inner):
      out = None
      out = fn(*inputs[k % n])
      k += 1
    sync(out)
    samples.append((time.perf_counter() - t0) * 1e3 / inner)
  del out
  return WallResult(first_out=first_out, first_call_ms=first_ms, inner=inner,
                    samples_ms=samples)
