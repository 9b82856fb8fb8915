"""tile_fill in the dropless experts: the GLU output is zeroed on empty rows, so the
grouped matmuls may skip them, and nothing a caller reads changes.

Compared with the same experts run without tile_fill ("xla": ragged_dot computes every
row) on the rows holding slots, with the layer's cotangent (zero on empty rows), and
and the GLU's zeros past the fill against NumPy (in `tests/kernels/test_glu.py`).
"""
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax import make_dispatch
from moe_jax.experts import dropless_experts

HIGHEST = jax.lax.Precision.HIGHEST


def test_dropless_experts_with_tile_fill_change_no_value_read():
  e, h, i, t, k = 4, 24, 16, 29, 2
  rng = np.random.default_rng(3)
  idx = np.stack([rng.choice(e, k, replace=False) for _ in range(t)]).astype(np.int32)
  meta = make_dispatch(jnp.asarray(idx), e, None, tile_rows=16)
  filled = np.asarray(meta.gather_slot) >= 0  # [R]
  assert not filled.all()  # some tiles are partly empty
  keys = jax.random.split(jax.random.key(0), 6)
  rows = jax.random.normal(keys[0], (meta.num_rows, h)) * jnp.asarray(filled)[:, None]
  weights = (jax.random.normal(keys[1], (e, h, 2 * i)) * 0.3,
             jax.random.normal(keys[2], (e, 2 * i)),  # biases: glu(bias) != 0 on empty rows
             jax.random.normal(keys[3], (e, i, h)) * 0.3,
             jax.random.normal(keys[4], (e, h)))
  cot = jax.random.normal(keys[5], (meta.num_rows, h)) * jnp.asarray(filled)[:, None]

  def run(tile_fill):
    def f(r, *w):
      return dropless_experts(r, meta.tile_expert, *w, tile_fill=tile_fill,
                              activation="gpt_oss_glu", precision=HIGHEST, implementation="xla")
    out, vjp = jax.vjp(f, rows, *weights)
    return out, vjp(cot)

  out, grads = run(meta.tile_fill)
  out0, grads0 = run(None)
  np.testing.assert_allclose(np.asarray(out)[filled], np.asarray(out0)[filled], rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(grads[0])[filled], np.asarray(grads0[0])[filled],
                             rtol=1e-5, atol=1e-5)
  for g, g0 in zip(grads[1:], grads0[1:]):  # every weight gradient, whole
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-5, atol=1e-5)
