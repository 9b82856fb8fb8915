"""Shared pytest set-up: strict JAX promotion and the `gpu` marker.

`make test` runs `-m "not gpu"` (CPU, Pallas in interpret mode). On the GPU machine,
`pytest -m gpu` runs the same kernel tests compiled; there they must not be skipped.
"""
import jax
import pytest

# Implicit rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


def _has_gpu() -> bool:
  try:
    return bool(jax.devices("gpu"))
  except RuntimeError:
    return False


HAS_GPU = _has_gpu()


def pytest_runtest_setup(item):
  if item.get_closest_marker("gpu") is not None and not HAS_GPU:
    pytest.fail("this test is marked `gpu` but jax sees no GPU; run it on the GPU machine")
