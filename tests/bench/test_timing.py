"""The timing protocol: statistics against NumPy, rotation and the inner loop."""
import numpy as np
import pytest

from bench import timing


def test_summarize_matches_numpy():
  rng = np.random.default_rng(17)
  samples = rng.lognormal(size=257)
  s = timing.summarize(samples)
  assert s["median"] == pytest.approx(np.median(samples))
  assert s["p95"] == pytest.approx(np.percentile(samples, 95))
  assert s["min"] == samples.min() and s["max"] == samples.max()
  assert s["std"] == pytest.approx(np.std(samples))
  assert s["mean"] == pytest.approx(np.mean(samples))
  assert s["n"] == 257


def test_summarize_small_hand_values():
  s = timing.summarize([4.0, 1.0, 3.0, 2.0])
  assert s["median"] == 2.5
  assert s["p95"] == pytest.approx(3.85)  # linear: 3 + 0.85 * (4 - 3)
  assert s["std"] == pytest.approx(np.sqrt(1.25))


def test_summarize_rejects_empty():
  with pytest.raises(ValueError, match="at least one"):
    timing.summarize([])


def test_protocol_rejects_a_negative_settle():
  with pytest.raises(ValueError, match=r"settle_s must be >= 0 seconds, got -1"):
    timing.Protocol(settle_s=-1.0)


def test_protocol_requires_50_iters_unless_quick():
  with pytest.raises(ValueError, match="iters must be >= 50"):
    timing.Protocol(iters=10)
  assert timing.Protocol(iters=10, quick=True).iters == 10


def test_time_wall_rotates_inputs_and_counts_calls():
  calls, synced = [], []

  def fn(x):
    calls.append(x)
    return x

  protocol = timing.Protocol(warmup=3, iters=7, quick=True, target_sample_ms=1e-9, max_inner=4)
  seen = []
  res = timing.time_wall(fn, [(0,), (1,), (2,)], synced.append, protocol,
                         first_out_hook=seen.append)
  assert seen == [0] and res.first_out is None  # the hook got inputs[0]'s output
  assert res.inner == 1  # the target is tiny, so one call per sample
  assert len(res.samples_ms) == 7 and len(res.latency_ms) == 3
  assert [c for c, _ in res.calibration] == [1, 2]  # two bursts, n and 2n calls
  assert len(calls) == 1 + 3 + (1 + 2) + 7
  assert set(calls) == {0, 1, 2}  # every input set was used
  assert len(synced) == 1 + 3 + 2 + 7  # one sync per burst and per sample


def test_time_wall_inner_loop_syncs_once_per_sample():
  synced = []
  protocol = timing.Protocol(warmup=1, iters=5, quick=True, target_sample_ms=1e9, max_inner=8)
  res = timing.time_wall(lambda x: x, [(0,), (1,)], synced.append, protocol)
  assert res.inner == 8
  assert res.calibration == []  # the latency already asks for max_inner calls
  assert len(synced) == 1 + 1 + 5


class _FakeGpu:
  """A clock in seconds that calls and syncs advance: each call costs `call_ms` of
  device time queued behind the previous ones, a sync waits for the queue and then
  costs `sync_ms` more."""

  def __init__(self, call_ms: float, sync_ms: float):
    self.now, self.done, self.call_ms, self.sync_ms = 0.0, 0.0, call_ms, sync_ms

  def clock(self) -> float:
    return self.now / 1e3

  def fn(self, x):
    self.done = max(self.done, self.now) + self.call_ms
    return x

  def sync(self, _):
    self.now = max(self.now, self.done) + self.sync_ms


@pytest.mark.parametrize("call_ms, sync_ms, target, want", [
    (1.0, 10.0, 20.0, 20),   # the sync costs 10 calls: a synced call's 11 ms asked for 2
    (1.5, 0.4, 2.0, 2),      # ~2 ms GPU calls: back to back, whatever the sync
    (0.15, 0.4, 20.0, 134),  # the pack: ceil(20 / 0.15)
    (30.0, 0.4, 20.0, 1),    # longer than the target: one call per sample
])
def test_time_wall_calibrates_inner_on_back_to_back_calls(call_ms, sync_ms, target, want):
  gpu = _FakeGpu(call_ms, sync_ms)
  protocol = timing.Protocol(warmup=2, iters=50, target_sample_ms=target)
  res = timing.time_wall(gpu.fn, [(0,), (1,)], gpu.sync, protocol, clock=gpu.clock)
  assert res.inner == want
  assert res.latency_ms == pytest.approx([call_ms + sync_ms] * 2)
  # Each sample's value is (inner calls + one sync) / inner.
  assert np.median(res.samples_ms) == pytest.approx(call_ms + sync_ms / want)
  # The window the clock telemetry reads covers the samples, and only them.
  start, end = res.samples_window
  assert (end - start) * 1e3 == pytest.approx(sum(res.samples_ms) * want)


def test_calls_per_sample_falls_back_on_noisy_bursts():
  # A longer second burst that took no longer (host noise): its own average is used.
  p = timing.Protocol(target_sample_ms=10.0, max_inner=100)
  assert timing.calls_per_sample([(4, 9.0), (8, 8.0)], p) == 10
  assert timing.calls_per_sample([(1, 1.0), (2, 1.05)], p) == 100  # capped at max_inner


def test_time_wall_settles_before_the_samples():
  """settle_s runs untimed samples of `inner` calls until that time has passed, then
  the timed samples, which read as without it."""
  gpu = _FakeGpu(1.0, 0.4)
  protocol = timing.Protocol(warmup=2, iters=50, target_sample_ms=2.0, settle_s=0.05)
  calls, settle_start = [], []
  clock = gpu.clock

  def fn(x):
    if not settle_start and len(calls) == 1 + 2 + 2 + 4:  # first call, warm-up, calibration
      settle_start.append(clock())
    calls.append(x)
    return gpu.fn(x)
  res = timing.time_wall(fn, [(0,), (1,)], gpu.sync, protocol, clock=clock)
  assert res.inner == 2
  # Bursts of 2 calls and a sync take 2.4 ms: 21 of them first pass 50 ms.
  assert res.settle_calls == 2 * 21
  assert len(calls) == 1 + 2 + (2 + 4) + 2 * 21 + 2 * 50
  start, _ = res.samples_window
  assert (start - settle_start[0]) * 1e3 == pytest.approx(21 * 2.4)
  assert np.median(res.samples_ms) == pytest.approx(1.0 + 0.4 / 2)
