"""What the zeros of unused tiles cost: gpt-oss-20b's kernels on a layout whose 159 tiles
are all unused, so that they only write zeros (GPU only).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/unused-tiles/probe.py OUT.json
Rows: CUPTI ms (3 medians of 10 calls) of gmm_glu (its training form too), the down gmm
and the pack (`scatter_rows` with every destination empty), and the bytes each writes.
A used layout's kernels take the rest of their time for the used tiles; the unused
tiles' share is this time scaled by their count (bench/NOTES.md, Next 1).
"""
import sys

import jax
import jax.numpy as jnp

from bench import gmm_probe
from moe_jax import kernels

E, H, I, TILES, T, K = 32, 2880, 2880, 159, 4096, 4


def main(path):
  log = gmm_probe.Log(path, shapes=dict(E=E, H=H, I=I, tiles=TILES))
  x, w_up, bias, _, _ = gmm_probe.operands(E, H, 2 * I, TILES, seed=3)
  group = jnp.full((TILES,), -1, jnp.int32)
  fill = jnp.zeros((TILES,), jnp.int32)
  w_down = jnp.ones((E, I, H), jnp.bfloat16)
  a = jnp.zeros((TILES * 128, I), jnp.bfloat16)
  src = jnp.ones((T, H), jnp.bfloat16)
  dest = jnp.full((T, K), -1, jnp.int32)
  rows = TILES * 128
  ops = {
      "gmm_glu": (lambda x, w, b, g, f: kernels.gmm_glu(
          x, w, b, g, f, activation="gpt_oss_glu", implementation="pallas"),
                  (x, w_up, bias, group, fill), rows * I * 2),
      "gmm_glu train": (lambda x, w, b, g, f: kernels.gmm_glu(
          x, w, b, g, f, activation="gpt_oss_glu", implementation="pallas", return_h=True),
                        (x, w_up, bias, group, fill), rows * 3 * I * 2),
      "gmm down": (lambda a, w, g: kernels.gmm(a, w, g, implementation="pallas"),
                   (a, w_down, group), rows * H * 2),
      "pack": (lambda s, d: kernels.scatter_rows(s, d, num_rows=rows, implementation="pallas"),
               (src, dest), rows * H * 2),
  }
  for name, (fn, args, written) in ops.items():
    f = jax.jit(fn)
    try:
      out = jax.tree.leaves(f(*args))
      ms = gmm_probe.cupti_ms(f, args)
      log(op=name, ms=ms, bytes_written=written, zero=all(bool(jnp.all(o == 0)) for o in out),
          tbps=round(written / (sorted(ms)[1] * 1e-3) / 1e12, 3))
    except Exception as e:  # pylint: disable=broad-except
      log(op=name, error=repr(e)[:2000])


if __name__ == "__main__":
  main(sys.argv[1])
