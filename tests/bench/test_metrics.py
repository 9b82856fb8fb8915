"""FLOP and byte formulas against hand-computed values; load statistics; derived figures."""
import numpy as np
import pytest

from bench import configs, metrics

CFG = configs.BenchConfig(name="hand", num_experts=4, top_k=2, hidden_size=8,
                          intermediate_size=16, num_tokens=10, dtype="bfloat16")


def test_flop_formulas():
  # T=10 H=8 I=16 E=4 K=2
  assert metrics.flop(CFG, "routing", "fwd") == 2 * 10 * 8 * 4 == 640
  assert metrics.flop(CFG, "experts", "fwd") == 6 * 10 * 2 * 8 * 16 == 15360
  assert metrics.flop(CFG, "layer", "fwd") == 15360 + 640
  assert metrics.flop(CFG, "layer", "fwd+bwd") == 3 * 16000
  assert metrics.flop(CFG, "pack", "fwd") is None
  assert metrics.flop(CFG, "combine", "fwd+bwd") is None


def test_strict_bytes_follow_moe_routing_bench():
  b = 2  # bf16
  assert metrics.bytes_strict(CFG, "pack", "fwd") == (1 + 2) * 8 * b * 10 == 480
  assert metrics.bytes_strict(CFG, "combine", "fwd") == 480
  # pack + combine = (2 + 2K) * H * b per token
  per_token = (metrics.bytes_strict(CFG, "pack", "fwd")
               + metrics.bytes_strict(CFG, "combine", "fwd")) / 10
  assert per_token == (2 + 2 * 2) * 8 * b
  assert metrics.bytes_strict(CFG, "pack", "fwd+bwd") == 960
  assert metrics.bytes_strict(CFG, "combine", "fwd+bwd") == 1440
  assert metrics.bytes_strict(CFG, "layer", "fwd") is None


def test_min_bytes():
  b = 2
  assert metrics.bytes_min(CFG, "layer", "fwd") == (3 * 4 * 8 * 16 + 4 * 8 + 2 * 10 * 8) * b
  assert metrics.bytes_min(CFG, "experts", "fwd") == (3 * 4 * 8 * 16 + 2 * 10 * 2 * 8) * b
  assert metrics.bytes_min(CFG, "routing", "fwd+bwd") == 3 * (10 * 8 + 4 * 8) * b
  assert metrics.bytes_min(CFG, "pack", "fwd") == 480


def test_load_stats_cv_and_drops():
  idx = np.array([[0, 1], [0, 2], [0, 3], [0, 1]])  # counts 4, 2, 1, 1
  s = metrics.load_stats(idx, 4, capacity=2)
  counts = np.array([4, 2, 1, 1])
  assert s["tokens_per_expert"] == [4, 2, 1, 1]
  assert s["load_cv"] == pytest.approx(counts.std() / counts.mean())
  assert s["drop_rate"] == pytest.approx(2 / 8)  # expert 0 drops 2 of 8 slots
  assert metrics.load_stats(idx, 4, capacity=None)["drop_rate"] == 0.0


def test_derive_against_hand_values():
  row = dict(component="layer", mode="fwd", wall_ms_median=2.0, kernel_ms_median=1.0)
  floors = {"matmul_tflops": {"bfloat16": 1e-6}, "copy_gbps": 1e-3}
  d = metrics.derive(row, CFG, floors)
  flop = 16000.0
  assert d["tflops"] == pytest.approx(flop / 2e-3 / 1e12)
  assert d["tokens_per_s"] == pytest.approx(10 / 2e-3)
  assert d["gbps_strict"] is None
  assert d["floor_matmul_ms"] == pytest.approx(flop / 1e6 * 1e3)
  bytes_min = metrics.bytes_min(CFG, "layer", "fwd")
  assert d["floor_copy_ms"] == pytest.approx(bytes_min / 1e6 * 1e3)
  assert d["floor_ms"] == max(d["floor_matmul_ms"], d["floor_copy_ms"])
  assert d["pct_roofline"] == pytest.approx(100 * d["floor_ms"] / 2.0)
  assert d["pct_roofline_kernel"] == pytest.approx(100 * d["floor_ms"] / 1.0)
  assert d["pct_matmul_floor"] == pytest.approx(100 * d["tflops"] / 1e-6)


def test_derive_pack_has_strict_bandwidth():
  d = metrics.derive(dict(component="pack", mode="fwd", wall_ms_median=1e-3,
                          kernel_ms_median=None), CFG, {})
  assert d["gbps_strict"] == pytest.approx(480 / 1e-6 / 1e9)
  assert d["tflops"] is None and d["pct_roofline"] is None


def test_jax_copy_op_adds_one_to_each_uint32_word():
  """The JAX copy floor's op: the buffer's bytes as uint32 words plus 1, against NumPy
  doing the same on a copy of the bytes (bf16 and f32 buffers, read once, written once)."""
  import jax.numpy as jnp
  import numpy as np
  from bench.floors import jax_copy_op
  rng = np.random.default_rng(0)
  for dtype in (jnp.bfloat16, jnp.float32):
    x = jnp.asarray(rng.standard_normal(64), dtype)
    got = np.asarray(jax_copy_op(x))
    want = (np.asarray(x).view(np.uint32) + np.uint32(1)).view(np.asarray(x).dtype)
    assert got.dtype == np.asarray(x).dtype and got.shape == x.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
