"""route(): logits, top-k with lower-index ties, routing weights, against float64 NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import route
from tests.core.reference import route_np

HIGHEST = jax.lax.Precision.HIGHEST


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("kind,normalize", [("gpt_oss", True), ("softmax_topk", True),
                                            ("softmax_topk", False)])
def test_route_matches_float64(kind, normalize, implementation):
  """"pallas" runs the top-k kernel (interpreted off a GPU) for "gpt_oss" only."""
  rng = np.random.default_rng(0)
  x, w, b = rng.normal(size=(37, 24)), rng.normal(size=(8, 24)), rng.normal(size=8)
  logits, idx, wts = route(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32),
                           jnp.asarray(b, jnp.float32), top_k=3, kind=kind,
                           normalize_topk=normalize, precision=HIGHEST,
                           implementation=implementation)
  ref_logits, ref_idx, ref_w = route_np(x, w, b, 3, kind, normalize)
  assert idx.dtype == jnp.int32 and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(idx, ref_idx)
  np.testing.assert_allclose(wts, ref_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
def test_ties_go_to_lower_index(implementation):
  # Zero weights and a bias with exact ties: experts 1, 2, 4 tie at the top.
  b = jnp.array([0.0, 2.0, 2.0, -1.0, 2.0, 0.5])
  _, idx, wts = route(jnp.ones((4, 3)), jnp.zeros((6, 3)), b, top_k=2,
                      implementation=implementation)
  np.testing.assert_array_equal(idx, np.tile([1, 2], (4, 1)))
  np.testing.assert_allclose(wts, 0.5)


@pytest.mark.parametrize("top_k", [0, 7])
def test_bad_top_k(top_k):
  with pytest.raises(ValueError, match=r"top_k must be in \[1, E=6\], got " + str(top_k)):
    route(jnp.ones((2, 3)), jnp.zeros((6, 3)), jnp.zeros(6), top_k=top_k)


@pytest.mark.parametrize("x,w,b,match", [
    ((2, 4, 3), (6, 3), (6,), r"x must have shape \[T, H\], got shape \(2, 4, 3\)"),
    ((2, 3), (3, 6), (6,), r"router_weight must have shape \[E, H=3\] \(H of x\), got shape "
                           r"\(3, 6\)"),
    ((2, 3), (6, 3), (5,), r"router_bias must have shape \[E\]=\(6,\), got shape \(5,\)"),
])
def test_bad_shapes(x, w, b, match):
  with pytest.raises(ValueError, match=match):
    route(jnp.ones(x), jnp.zeros(w), jnp.zeros(b), top_k=2)


def test_bad_kind():
  with pytest.raises(ValueError, match="kind must be one of .*'gpt_oss'.*got 'mixtral'"):
    route(jnp.ones((2, 3)), jnp.zeros((6, 3)), jnp.zeros(6), top_k=2, kind="mixtral")


@pytest.mark.parametrize("kind", ["gpt_oss", "softmax_topk"])
def test_bad_implementation(kind):
  with pytest.raises(ValueError, match=r"implementation must be one of \('xla', 'pallas'\) or "
                     r"None, got 'triton'"):
    route(jnp.ones((2, 3)), jnp.zeros((6, 3)), jnp.zeros(6), top_k=2, kind=kind,
          implementation="triton")
