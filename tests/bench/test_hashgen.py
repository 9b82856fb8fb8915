"""The hash tensors are bit-identical in NumPy, PyTorch and JAX, and exact in bf16."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bench import hashgen


@pytest.mark.parametrize("shape", [(7,), (3, 5, 7), (4, 33, 65)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_frameworks_agree_bitwise(shape, dtype):
  ref = hashgen.values_numpy(shape, 17, 3, 10)
  t = hashgen.values_torch(shape, 17, 3, 10, dtype=getattr(torch, dtype), device="cpu")
  j = hashgen.values_jax(shape, 17, 3, 10, dtype=getattr(jnp, dtype))
  np.testing.assert_array_equal(t.float().numpy(), ref)
  np.testing.assert_array_equal(np.asarray(j).astype(np.float32), ref)


def test_chunked_paths_agree(monkeypatch):
  monkeypatch.setattr(hashgen, "_TORCH_CHUNK", 100)  # forces chunks and lax.map
  shape = (6, 7, 9)
  ref = hashgen.values_numpy(shape, 1, 2, 8)
  t = hashgen.values_torch(shape, 1, 2, 8, dtype=torch.float32, device="cpu")
  j = hashgen.values_jax(shape, 1, 2, 8, dtype=jnp.float32)
  np.testing.assert_array_equal(t.numpy(), ref)
  np.testing.assert_array_equal(np.asarray(j), ref)


def test_levels_range_and_spread():
  lv = hashgen.levels_numpy((1 << 16,), 0, 0)
  assert lv.min() == -128 and lv.max() == 127
  assert abs(lv.std() - hashgen.LEVEL_STD) < 1.0
  assert not np.array_equal(lv, hashgen.levels_numpy((1 << 16,), 0, 1))  # salt matters


def test_values_exact_in_bfloat16():
  v = hashgen.values_numpy((4096,), 5, 5, 12)
  as_bf16 = torch.from_numpy(v).to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(as_bf16, v)


def test_scale_for_std():
  assert hashgen.scale_log2_for_std(0.02) == 12
  assert hashgen.scale_log2_for_std(0.1) == 10


def test_topk_routing():
  idx, w = hashgen.topk_routing(50, 8, 3, seed=17)
  assert idx.shape == (50, 3) and idx.dtype == np.int32
  assert all(len(set(r)) == 3 for r in idx.tolist())  # K distinct experts per token
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  assert np.all(np.diff(w, axis=1) <= 0)  # descending, like top-k
  idx2, _ = hashgen.topk_routing(50, 8, 3, seed=17)
  np.testing.assert_array_equal(idx, idx2)
