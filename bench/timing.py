"""The one timing protocol, used unchanged for JAX and PyTorch.

A case is a callable `fn(*inputs[j])` over a list of rotated input sets, plus a
`sync(out)` that waits for `out` (JAX: block_until_ready; PyTorch: cuda.synchronize,
a no-op on the CPU). The protocol:

1. First call on inputs[0], synced and timed alone: `first_call_ms` (it includes
   torch.compile's compilation; JAX compiles ahead of time, reported apart).
2. `warmup` calls, each synced, cycling through the inputs: `latency_ms`, the time of
   one call as a user who waits for it sees it (dispatch, launch and sync included).
3. Calibration: two bursts of back-to-back calls, n and 2n, each ended by one sync.
   Their difference is the cost of n calls without the sync, so
   `inner` = ceil(`target_sample_ms` / that per-call cost), 1 <= inner <= max_inner:
   the calls of one sample fill the target, whatever a sync costs. (Picking `inner`
   from a synced call's latency instead let the runtime's sync, ~0.4 ms on a GPU,
   decide whether a ~2 ms call got one call per sample or two, and so whether its
   wall figure was a latency or a throughput.)
4. With `settle_s` > 0, samples of `inner` calls run untimed for that many seconds
   first, so that the timed ones see the GPU's sustained state: under a board power
   cap a fast layer's clock sinks over the first seconds of back-to-back calls
   (bench/NOTES.md, "With the GLU kernels' fill skip"). 0 by default.
5. `iters` samples. A sample is `inner` back-to-back calls on successive rotated
   inputs, then ONE sync; its value is elapsed / inner: wall time per call of
   back-to-back calls, host overhead included, the sync amortised over the sample.
   A call that takes `target_sample_ms` or more gets inner = 1: its sample is one
   call and its sync, a latency.

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
    warmup: synced warm-up calls after the first call (their times: `latency_ms`).
    iters: timed samples (>= MIN_ITERS unless `quick`).
    rotate: input sets to cycle through (capped by memory, at least 2).
    target_sample_ms: back-to-back call time one sample aims for (sets `inner`).
    max_inner: most back-to-back calls per sample.
    settle_s: seconds of untimed samples before the timed ones (0: none).
    quick: test mode; allows iters < MIN_ITERS and labels every row.
  """
  warmup: int = 10
  iters: int = MIN_ITERS
  rotate: int = 4
  target_sample_ms: float = 20.0
  max_inner: int = 1024
  settle_s: float = 0.0
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
    if not self.settle_s >= 0:
      raise ValueError(f"settle_s must be >= 0 seconds, got {self.settle_s}")


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
    latency_ms: each synced warm-up call.
    inner: back-to-back calls per sample.
    calibration: (calls, ms) of each calibration burst, sync included.
    samples_ms: per-call time of each sample.
    samples_window: `clock()` at the first sample's start and the last one's end.
    settle_calls: calls run untimed for `settle_s` before the samples.
  """
  first_out: Any
  first_call_ms: float
  latency_ms: list[float]
  inner: int
  calibration: list[tuple[int, float]]
  samples_ms: list[float]
  samples_window: tuple[float, float] = (0.0, 0.0)
  settle_calls: int = 0


class _Runner:
  """Calls `fn` on successive rotated inputs, releasing each output before the next call."""

  def __init__(self, fn, inputs, sync, clock):
    self.fn, self.inputs, self.sync, self.clock = fn, inputs, sync, clock
    self.k = 0

  def burst(self, calls: int) -> float:
    """`calls` back-to-back calls, then one sync; returns the elapsed ms."""
    out = None
    t0 = self.clock()
    for _ in range(calls):
      out = None
      out = self.fn(*self.inputs[self.k % len(self.inputs)])
      self.k += 1
    self.sync(out)
    return (self.clock() - t0) * 1e3


def calls_per_sample(calibration: Sequence[tuple[int, float]], protocol: Protocol) -> int:
  """`inner` from two bursts (n, ms_n) and (2n, ms_2n): the target over the per-call cost.

  The per-call cost is (ms_2n - ms_n) / n, which leaves out the one sync both bursts
  pay. Should host noise make it non-positive, the longer burst's average is used.

  Example (a 1 ms call whose sync costs 10 ms, a 20 ms target):
    >>> calls_per_sample([(2, 12.0), (4, 14.0)], Protocol(target_sample_ms=20.0))
    20
  """
  (n1, t1), (n2, t2) = calibration
  per_call = (t2 - t1) / (n2 - n1) if n2 > n1 else 0.0
  if not per_call > 0:
    per_call = t2 / n2
  want = math.ceil(protocol.target_sample_ms / max(per_call, 1e-9))
  return int(min(protocol.max_inner, max(1, want)))


def time_wall(fn: Callable[..., Any], inputs: Sequence[tuple], sync: Callable[[Any], None],
              protocol: Protocol, *, first_out_hook: Callable[[Any], None] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> WallResult:
  """Times `fn` with the protocol of this module's docstring.

  Args:
    fn: the callable under test; `fn(*inputs[j])`.
    inputs: rotated input sets (at least one).
    sync: waits for an output of fn.
    protocol: warm-up, samples and inner-loop parameters.
    first_out_hook: called with the first output before anything else runs (the
      runner copies its parity arrays to the host there, so the output can be freed).
    clock: seconds, monotonic (tests pass a fake one).

  Returns:
    WallResult; `first_out` is None when a hook consumed it.
  """
  if not inputs:
    raise ValueError("time_wall needs at least one input set")
  t0 = clock()
  first_out = fn(*inputs[0])
  sync(first_out)
  first_ms = (clock() - t0) * 1e3
  if first_out_hook is not None:
    first_out_hook(first_out)
    first_out = None
  runner = _Runner(fn, inputs, sync, clock)
  runner.k = 1
  latency = [runner.burst(1) for _ in range(protocol.warmup)]
  estimate = float(np.median(latency)) if latency else first_ms
  n = int(min(protocol.max_inner, max(1, math.ceil(protocol.target_sample_ms
                                                   / max(estimate, 1e-9)))))
  if n < protocol.max_inner:
    n2 = min(protocol.max_inner, 2 * n)
    calibration = [(n, runner.burst(n)), (n2, runner.burst(n2))]
    inner = calls_per_sample(calibration, protocol)
  else:
    calibration, inner = [], n
  settle_calls = 0
  settle_end = clock() + protocol.settle_s
  while clock() < settle_end:
    runner.burst(inner)
    settle_calls += inner
  start = clock()
  samples = [runner.burst(inner) / inner for _ in range(protocol.iters)]
  return WallResult(first_out=first_out, first_call_ms=first_ms, latency_ms=latency,
                    inner=inner, calibration=calibration, samples_ms=samples,
                    samples_window=(start, clock()), settle_calls=settle_calls)
