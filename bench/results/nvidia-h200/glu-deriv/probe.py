"""Variant 49's probe (GPU only): the ping-pong gmm_glu of a training forward writing h
(return_h) or the GLU's derivatives (return_deriv), and the GLU gradient from h
(tile_glu_grad) or from the derivatives (tile_glu_vjp), on gpt-oss-20b's synthetic
dropless layout (32 experts, 143 used tiles of 160, K = 2880, 2I = 5760). CUPTI ms,
three medians of ten calls each; writes the JSON log given as argv[1].

  PYTHONPATH=$PWD python3 bench/results/nvidia-h200/glu-deriv/probe.py OUT.json
"""
import sys

import jax
import jax.numpy as jnp

from bench import gmm_probe
from moe_jax import kernels

ACT = dict(activation="gpt_oss_glu")
log = gmm_probe.Log(sys.argv[1], device=str(jax.devices()[0]))
x, w, b, group, fill = gmm_probe.operands(32, 2880, 5760, 160, seed=1)
g = jax.random.normal(jax.random.key(2), (x.shape[0], w.shape[2] // 2), jnp.bfloat16)
for second in ("return_h", "return_deriv"):
  fn = jax.jit(lambda *a, s=second: kernels.gmm_glu(*a, implementation="pallas",
                                                    zero_unused=False, **{s: True}, **ACT))
  try:
    log(op="gmm_glu", second=second, ms=gmm_probe.cupti_ms(fn, (x, w, b, group, fill)))
  except Exception as e:  # noqa: BLE001 (the record says what failed)
    log(op="gmm_glu", second=second, error=repr(e)[:2000])
_, h = kernels.gmm_glu(x, w, b, group, fill, implementation="pallas", return_h=True, **ACT)
grad = jax.jit(lambda *a: kernels.tile_glu_grad(*a, implementation="pallas",
                                                zero_unused=False, **ACT))
log(op="tile_glu_grad", ms=gmm_probe.cupti_ms(grad, (h, b, g, group, fill)))
try:
  _, deriv = kernels.gmm_glu(x, w, b, group, fill, implementation="pallas", return_deriv=True,
                             **ACT)
  vjp = jax.jit(lambda *a: kernels.tile_glu_vjp(*a, implementation="pallas", zero_unused=False))
  log(op="tile_glu_vjp", ms=gmm_probe.cupti_ms(vjp, (deriv, g, group, fill)))
  dh0, s0 = grad(h, b, g, group, fill)
  dh1, s1 = vjp(deriv, g, group, fill)
  # zero_unused=False leaves the unused tiles' rows unwritten: compare the used ones.
  used = jnp.repeat(group >= 0, x.shape[0] // group.shape[0])  # [R]
  dh0, dh1 = dh0[used], dh1[used]
  diff = jnp.abs(dh1.astype(jnp.float32) - dh0.astype(jnp.float32))
  log(op="dh vjp vs grad", max_abs=float(diff.max()),
      max_dh=float(jnp.abs(dh0.astype(jnp.float32)).max()),
      differ=int(jnp.sum(dh1 != dh0)), of=int(dh0.size),
      sums_max_abs=float(jnp.abs(s1 - s0).max()))
except Exception as e:  # noqa: BLE001
  log(op="tile_glu_vjp", error=repr(e)[:2000])
