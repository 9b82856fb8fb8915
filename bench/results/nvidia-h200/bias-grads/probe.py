"""Variant 51's probe (GPU only): the combine's bias gradients on gpt-oss-20b's shapes
(T = 4096, K = 4, E = 32, H = 2880; src rows R = 18304, as the dropless layout's
rows). Before: the Pallas slot_dots without the bias, plus XLA's [T, H] x [H, E] and
[E, T] x [T, H] products (each an f32 operand split into bf16 hi + lo). After: slot_dots
with the bias rows, and group_sums, at two tiles each. CUPTI ms of each jitted function
(every kernel it launches), three medians of ten calls; the two results' largest
differences; writes the JSON log given as argv[1].

  PYTHONPATH=$PWD python3 bench/results/nvidia-h200/bias-grads/probe.py OUT.json [small]

(`small`: T = 64, H = 200, R = 300, for a dry run of the script itself.)
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench import gmm_probe
from moe_jax import kernels
from moe_jax.kernels import BlockConfig, reference

T, K, E, H, R = (64, 4, 32, 200, 300) if sys.argv[2:] == ["small"] else (4096, 4, 32, 2880, 18304)
log = gmm_probe.Log(sys.argv[1], device=str(jax.devices()[0]))
keys = jax.random.split(jax.random.key(0), 5)
src = jax.random.normal(keys[0], (R, H), jnp.bfloat16)
g = jax.random.normal(keys[1], (T, H), jnp.bfloat16)
bias = jax.random.normal(keys[2], (E, H), jnp.float32).astype(jnp.bfloat16)
rng = np.random.default_rng(3)
expert = jnp.asarray(np.stack([rng.choice(E, K, replace=False) for _ in range(T)]), jnp.int32)
index = jnp.asarray(rng.permutation(R)[:T * K].reshape(T, K), jnp.int32)
weight = jax.nn.softmax(jax.random.normal(keys[3], (T, K)), axis=-1)
P = dict(implementation="pallas")


def before(src, index, g, bias, expert, weight):
  dots = kernels.slot_dots(src, index, g, **P)
  g_dot_bias = reference.dot_f32(reference.split16(bias, g.dtype), g.T).T  # [T, E]
  term = jnp.take_along_axis(g_dot_bias, expert, axis=1)  # every slot is kept here
  return dots + term, kernels.group_sums(g, expert, weight, num_groups=E, implementation="xla")


def after(src, index, g, bias, expert, weight, dots_config=None, sums_config=None):
  return (kernels.slot_dots(src, index, g, bias=bias, bias_index=expert, config=dots_config, **P),
          kernels.group_sums(g, expert, weight, num_groups=E, config=sums_config, **P))


args = (src, index, g, bias, expert, weight)
want = jax.jit(before)(*args)
log(case="before", ms=gmm_probe.cupti_ms(jax.jit(before), args))
for dots_rows in (16, 32):  # the default with a bias first
  for sums in ((128, 64), (64, 64)):  # the default at E = 32 first
    fn = jax.jit(lambda *a, d=dots_rows, s=sums: after(
        *a, dots_config=BlockConfig(block_rows=d, block_h=128, num_warps=4),
        sums_config=BlockConfig(block_rows=s[0], block_h=s[1], num_warps=4)))
    case = dict(case="after", slot_dots_rows=dots_rows, group_sums_block=sums)
    try:
      got = fn(*args)
      diffs = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, want)]
      log(**case, ms=gmm_probe.cupti_ms(fn, args), rel_diff_dots_sums=diffs)
    except Exception as e:  # noqa: BLE001 (the record says what failed)
      log(**case, error=repr(e)[:2000])
log(case="slot_dots alone", ms=gmm_probe.cupti_ms(
    jax.jit(lambda s, i, g: kernels.slot_dots(s, i, g, **P)), (src, index, g)))
log(case="group_sums xla alone", ms=gmm_probe.cupti_ms(
    jax.jit(lambda g, e, w: kernels.group_sums(g, e, w, num_groups=E, implementation="xla")),
    (g, expert, weight)))
log(case="group_sums pallas alone", ms=gmm_probe.cupti_ms(
    jax.jit(lambda g, e, w: kernels.group_sums(g, e, w, num_groups=E, **P)), (g, expert, weight)))
for rows in (64, 32):  # the scaled pack (the combine's backward), default tile first
  config = BlockConfig(block_rows=rows, block_h=128, num_warps=4)
  log(case="scatter_rows scaled", block_rows=rows, ms=gmm_probe.cupti_ms(
      jax.jit(lambda g, i, w, c=config: kernels.scatter_rows(g, i, w, num_rows=R, config=c, **P)),
      (g, index, weight)))
