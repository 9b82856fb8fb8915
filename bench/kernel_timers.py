"""GPU kernel time per call from CUPTI, one timer per framework, one definition.

Kernel time of a call = the sum of the durations of the GPU kernels it launched
(memcpy and memset activities excluded), as CUPTI records them:

- JAX: `jax.experimental.mosaic.gpu.profiler.measure(f, iterations=n)`, which runs
  f n times back to back after one warm-up call and returns each call's kernel sum.
- PyTorch: `torch.profiler` with CUDA activity. Each call runs inside a
  `record_function` range and is followed by a synchronize, so its kernels execute
  inside the range; a kernel is assigned to the range that contains its start.

Both return one value per call (ms), over the rotated inputs, or None with a reason
(no GPU; CUPTI unavailable). They aim for `iters` calls, with two memory guards:
JAX's measure keeps every output of its batch alive, so batches are cut to about
OUTPUT_BUDGET bytes of outputs; the PyTorch profiler holds every event in host memory,
so calls that launch many kernels (Python-loop implementations) are profiled fewer
times, about EVENT_BUDGET events in all, and never fewer than MIN_CALLS.
"""
from __future__ import annotations

import bisect
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

JAX_METHOD = "cupti: jax.experimental.mosaic.gpu.profiler.measure, sum of kernels per call"
TORCH_METHOD = "cupti: torch.profiler kernel totals per call (record_function ranges)"
TORCH_FALLBACK = "cupti: torch.profiler kernel total / calls (ranges did not cover the kernels)"
_RANGE = "moe_bench_call_"
OUTPUT_BUDGET = 2 << 30
EVENT_BUDGET = 200_000
MIN_CALLS = 10


def jax_kernel_times(fn: Callable[..., Any], inputs: Sequence[tuple], iters: int
                     ) -> tuple[list[float] | None, str]:
  """Per-call kernel time (ms) of a jitted or AOT-compiled JAX function."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.default_backend() != "gpu":
    return None, f"n/a: backend {jax.default_backend()} has no CUPTI"
  try:
    from jax.experimental.mosaic.gpu import profiler  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # jaxlib without the Mosaic GPU extension
    return None, f"n/a: mosaic gpu profiler unavailable ({e})"
  takes_iterations = "iterations" in inspect.signature(profiler.measure).parameters
  shapes = fn.out_info if hasattr(fn, "out_info") else jax.eval_shape(fn, *inputs[0])
  out_bytes = sum(math.prod(s.shape) * s.dtype.itemsize for s in jax.tree_util.tree_leaves(shapes))
  per_set = math.ceil(iters / len(inputs))
  batch = max(1, min(per_set, OUTPUT_BUDGET // max(1, out_bytes))) if takes_iterations else 1
  times: list[float] = []
  for args in inputs:
    left = per_set
    while left > 0:
      n = min(batch, left)
      out, t = (profiler.measure(fn, iterations=n) if takes_iterations
                else profiler.measure(fn))(*args)
      del out
      got = t if isinstance(t, list) else [t]
      if any(v is None for v in got):
        return None, "n/a: CUPTI saw no kernel"
      times.extend(float(v) for v in got)
      left -= n
  return times, JAX_METHOD


def torch_kernel_times(fn: Callable[..., Any], inputs: Sequence[tuple], iters: int
                       ) -> tuple[list[float] | None, str]:
  """Per-call kernel time (ms) of a PyTorch callable on CUDA."""
  import torch  # pylint: disable=import-outside-toplevel
  if not torch.cuda.is_available():
    return None, "n/a: no CUDA device (CUPTI)"
  from torch.autograd import DeviceType  # pylint: disable=import-outside-toplevel
  from torch.profiler import ProfilerActivity, profile, record_function  # pylint: disable=import-outside-toplevel
  n = len(inputs)
  with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as probe:
    out = fn(*inputs[0])
    torch.cuda.synchronize()
    del out
  events_per_call = max(1, len(probe.events()))
  iters = max(MIN_CALLS, min(iters, EVENT_BUDGET // events_per_call))
  with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for j in range(iters):
      with record_function(f"{_RANGE}{j}"):
        out = None
        out = fn(*inputs[j % n])
        torch.cuda.synchronize()
    del out
  events = prof.events()
  # The CPU ranges; kineto also mirrors each range on the GPU timeline as a
  # "gpu_user_annotation" of the same name, which is not a kernel.
  ranges = [(e.time_range.start, e.time_range.end) for e in events
            if e.name.startswith(_RANGE) and e.device_type == DeviceType.CPU]
  kernels = [(e.time_range.start, e.time_range.elapsed_us()) for e in events
             if e.device_type == DeviceType.CUDA and not e.name.startswith(_RANGE)
             and not e.name.startswith(("Memcpy", "Memset", "memcpy", "memset"))]
  return per_call_kernels(ranges, kernels, iters)


def per_call_kernels(ranges: Sequence[tuple[float, float]], kernels: Sequence[tuple[float, float]],
                     calls: int) -> tuple[list[float] | None, str]:
  """Assigns kernels to calls: each kernel (start_us, duration_us) goes to the range
  (start_us, end_us) that contains its start. Returns per-call totals in ms, or
  total / calls for every call when the ranges miss more than 1% of the kernel time."""
  total_us = sum(d for _, d in kernels)
  if not kernels or total_us <= 0:
    return None, "n/a: CUPTI saw no kernel"
  ranges = sorted(ranges)
  starts = [s for s, _ in ranges]
  totals = [0.0] * len(ranges)
  assigned = 0.0
  for start, dur in kernels:
    i = bisect.bisect_right(starts, start) - 1
    if 0 <= i < len(ranges) and start <= ranges[i][1]:
      totals[i] += dur
      assigned += dur
  if len(ranges) != calls or assigned < 0.99 * total_us:
    return [total_us / calls / 1e3] * calls, TORCH_FALLBACK
  return [v / 1e3 for v in totals], TORCH_METHOD
