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
  assert len(res.samples_ms) == 7
  assert len(calls) == 1 + 3 + 7
  assert set(calls) == {0, 1, 2}  # every input set was used
  assert len(synced) == 1 + 3 + 7  # one sync per sample


def test_time_wall_inner_loop_syncs_once_per_sample():
  synced = []
  protocol = timing.Protocol(warmup=1, iters=5, quick=True, target_sample_ms=1e9, max_inner=8)
  res = timing.time_wall(lambda x: x, [(0,), (1,)], synced.append, protocol)
  assert res.inner == 8
  assert len(synced) == 1 + 1 + 5
