"""Per-call kernel totals from profiler events (the part that needs no GPU)."""
import pytest

from bench import kernel_timers


def test_kernels_assigned_to_the_range_holding_their_start():
  ranges = [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
  kernels = [(1.0, 2.0), (5.0, 1.0), (12.0, 4.0), (25.0, 3.0), (29.5, 1.0)]
  times, method = kernel_timers.per_call_kernels(ranges, kernels, 3)
  assert method == kernel_timers.TORCH_METHOD
  assert times == pytest.approx([3e-3, 4e-3, 4e-3])


def test_falls_back_to_the_mean_when_ranges_miss_kernels():
  times, method = kernel_timers.per_call_kernels([(0.0, 1.0)], [(0.5, 1.0), (5.0, 3.0)], 1)
  assert method == kernel_timers.TORCH_FALLBACK
  assert times == pytest.approx([4e-3])


def test_no_kernels():
  assert kernel_timers.per_call_kernels([(0.0, 1.0)], [], 1)[0] is None


def test_cpu_has_no_kernel_time():
  import jax.numpy as jnp
  times, why = kernel_timers.jax_kernel_times(lambda x: x, [(jnp.ones(3),)], 5)
  assert times is None and "n/a" in why
