"""Variant 38 probe: the ping-pong gmm / gmm_glu on a tile layout whose expert tails
are filled at random, with and without `tile_fill` (GPU only).

usage (repository root or a git archive of another commit, GPU machine):
  python3 bench/results/nvidia-h200/tail-items/probe.py OUT.json
Each row: CUPTI ms (3 medians of 10 calls) and a SHA-1 of the output's bytes, so that
runs of two commits can be compared bit for bit. A commit whose `kernels.gmm` has no
`tile_fill` runs without it. gpt-oss-20b's shapes: E = 32, H = I = 2880, 159 tiles.
"""
import hashlib
import inspect
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench import gmm_probe
from moe_jax import kernels

E, H, I, TILES = 32, 2880, 2880, 159


def sha(x) -> str:
  return hashlib.sha1(np.asarray(jax.device_get(x)).tobytes()).hexdigest()[:16]


def main(path):
  log = gmm_probe.Log(path, shapes=dict(E=E, H=H, I=I, tiles=TILES))
  takes_fill = "tile_fill" in inspect.signature(kernels.gmm).parameters
  x, w_up, bias, group, fill = gmm_probe.operands(E, H, 2 * I, TILES, seed=3)
  full = jnp.where(group >= 0, 128, 0).astype(jnp.int32)
  k = jax.random.split(jax.random.key(5), 3)
  w_down = (jax.random.normal(k[0], (E, I, H), jnp.float32) / H ** 0.5).astype(jnp.bfloat16)
  for fills_name, f in (("tails", fill), ("full", full)):
    keep = ((jnp.arange(TILES * 128) % 128 < jnp.repeat(f, 128))
            & jnp.repeat(group >= 0, 128))[:, None]
    xs = jnp.where(keep, x, 0).astype(jnp.bfloat16)
    a = jnp.where(keep, jax.random.normal(k[1], (TILES * 128, I), jnp.bfloat16), 0)
    dh = jnp.where(keep, jax.random.normal(k[2], (TILES * 128, 2 * I), jnp.bfloat16), 0)
    fk = dict(tile_fill=f) if takes_fill else {}
    ops = {
        "gmm_glu train": (lambda x, w, b, g, f: kernels.gmm_glu(
            x, w, b, g, f, activation="gpt_oss_glu", implementation="pallas", return_h=True),
                          (xs, w_up, bias, group, f)),
        "gmm_glu": (lambda x, w, b, g, f: kernels.gmm_glu(
            x, w, b, g, f, activation="gpt_oss_glu", implementation="pallas"),
                    (xs, w_up, bias, group, f)),
        "gmm down": (lambda a, w, g: kernels.gmm(a, w, g, implementation="pallas", **fk),
                     (a, w_down, group)),
        "gmm dA up": (lambda d, w, g: kernels.gmm(d, w, g, transpose_rhs=True,
                                                  implementation="pallas", **fk),
                      (dh, w_up, group)),
        "gmm dA down": (lambda d, w, g: kernels.gmm(d, w, g, transpose_rhs=True,
                                                    implementation="pallas", **fk),
                        (a, w_down, group)),
    }
    for name, (fn, args) in ops.items():
      f_jit = jax.jit(fn)
      try:
        out = f_jit(*args)
        ms = gmm_probe.cupti_ms(f_jit, args)
        log(op=name, fills=fills_name, takes_fill=takes_fill, ms=ms,
            sha=[sha(o) for o in jax.tree.leaves(out)],
            half_tiles=int(jnp.sum((f > 0) & (f <= 64))), used_tiles=int(jnp.sum(group >= 0)))
      except Exception as e:  # pylint: disable=broad-except
        log(op=name, fills=fills_name, error=repr(e)[:2000])


if __name__ == "__main__":
  main(sys.argv[1])
