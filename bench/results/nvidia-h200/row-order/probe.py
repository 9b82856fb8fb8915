"""The row kernels' launch order (`moe_jax.kernels._tiles.Order`): scatter_rows (the
pack, and the combine's backward with a slot scale), combine_rows (with the down bias)
and slot_dots, each column block walked down the rows against each row block's column
blocks in turn (`columns_fastest`), under each op's default block.

Shapes: gpt-oss-20b's layer (T = 4096, K = 4, H = 2880, E = 32, R = 18304 rows of 143
tiles) and moe-routing-bench's pack / combine (T = 16384, K = 2, H = 4096, E = 128, R =
T K rows). Destinations are a random permutation of the rows (distinct, as the
dispatch's), two slots in a hundred dropped. Each time is the median of three medians
over 20 calls of CUPTI kernel time (ms); every output is compared, bit for bit, with
the other order's, and the strict bytes are each op's reads and writes of its rows
(scatter: T H read, T K H written; combine and slot_dots: T K H and T H read, T H
written by combine).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/row-order/probe.py OUT.json
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench.gmm_probe import Log, cupti_ms
from moe_jax.kernels import block_config
from moe_jax.kernels import combine as combine_kernel
from moe_jax.kernels import scatter as scatter_kernel
from moe_jax.kernels import slot_dot as slot_dot_kernel

SHAPES = {"gpt-oss-20b": (4096, 4, 2880, 32, 18304),
          "routing-bench": (16384, 2, 4096, 128, 32768)}


def _operands(t, k, h, e, r, seed=0):
  rng = np.random.default_rng(seed)
  dest = rng.permutation(r)[:t * k].reshape(t, k)
  dest[rng.random(dest.shape) < 0.02] = -1
  keys = jax.random.split(jax.random.key(seed), 5)
  return dict(
      x=jax.random.normal(keys[0], (t, h), jnp.bfloat16),
      rows=jax.random.normal(keys[1], (r, h), jnp.bfloat16),
      g=jax.random.normal(keys[2], (t, h), jnp.bfloat16),
      w=jax.random.uniform(keys[3], (t, k), jnp.float32),
      bias=jax.random.normal(keys[4], (e, h), jnp.float32),
      expert=jnp.asarray(rng.integers(0, e, (t, k)), jnp.int32),
      dest=jnp.asarray(dest, jnp.int32))


def _cases(t, k, h, r):
  gather_cfg = block_config.default_config(t, h, tile_elements=block_config.GATHER_TILE_ELEMENTS)
  reduce_cfg = block_config.default_config(t, h, tile_elements=block_config.REDUCE_TILE_ELEMENTS)
  rows_used = jnp.int32(r)
  strict_scatter = (t * h + t * k * h) * 2
  strict_reduce = (t * k * h + t * h) * 2
  return {
      "scatter (pack)": (lambda order, o: scatter_kernel.scatter_rows(
          o["x"], o["dest"], None, rows_used, num_rows=r, config=gather_cfg,
          interpret=False, columns_fastest=order), strict_scatter, gather_cfg),
      "scatter with scale": (lambda order, o: scatter_kernel.scatter_rows(
          o["g"], o["dest"], o["w"], rows_used, num_rows=r, config=gather_cfg,
          interpret=False, columns_fastest=order), strict_scatter, gather_cfg),
      "combine with bias": (lambda order, o: combine_kernel.combine_rows(
          o["rows"], o["dest"], o["w"], o["bias"], o["expert"], out_dtype=jnp.bfloat16,
          config=reduce_cfg, interpret=False, columns_fastest=order),
          strict_reduce + t * h * 2, reduce_cfg),
      "slot_dots": (lambda order, o: slot_dot_kernel.slot_dots(
          o["rows"], o["dest"], o["g"], config=reduce_cfg, interpret=False,
          columns_fastest=order), strict_reduce, reduce_cfg),
  }


def main(out_path):
  log = Log(out_path, device=str(jax.devices()[0]))
  for shape, (t, k, h, e, r) in SHAPES.items():
    o = _operands(t, k, h, e, r)
    for name, (build, nbytes, config) in _cases(t, k, h, r).items():
      outs = {}
      for order in (False, True):
        f = jax.jit(lambda o, order=order, build=build: build(order, o))
        outs[order] = np.asarray(jax.block_until_ready(f(o)))
        ms = cupti_ms(f, (o,))
        log(shape=shape, op=name, block=str(config), columns_fastest=order,
            ms=float(np.median(ms)), reps=ms, strict_tb_per_s=nbytes / np.median(ms) / 1e9,
            same_bits=bool(np.array_equal(outs[order].view(np.uint8),
                                          outs[False].view(np.uint8))))


if __name__ == "__main__":
  main(sys.argv[1])
