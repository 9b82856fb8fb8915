"""Variant 50's probe (GPU only): the ping-pong gmm at N = 5760 and, transposed, at
N = 2880 (the backward's dx) on gpt-oss-20b's synthetic dropless layout (32 experts,
160 tiles, x zero past each tile's fill), row_band="expert", launched whole (no
tile_fill) or with the half tiles' items paired (tile_fill). CUPTI ms, three medians of
ten calls each; the busiest CTA's work under each order (a whole tile 1, a pair 1, a
lone half 0.5); whether the computed rows agree bit for bit. Writes the JSON log given
as argv[1].

  PYTHONPATH=$PWD python3 bench/results/nvidia-h200/half-pairs/probe.py OUT.json
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench import gmm_probe
from moe_jax import kernels
from moe_jax.kernels.grouped_matmul import (ITEM_FULL, ITEM_HALF, ITEM_PAIR, paired_items,
                                            unpack_item)

log = gmm_probe.Log(sys.argv[1], device=str(jax.devices()[0]))
x, w, _, group, fill = gmm_probe.operands(32, 2880, 5760, 160, seed=1)
kept = jnp.arange(x.shape[0]) % 128 < jnp.repeat(fill, 128)
x = jnp.where(kept[:, None], x, 0).astype(x.dtype)
half_tile = np.asarray((fill <= 64) & (group >= 0))
skipped = np.repeat(half_tile, 128) & (np.arange(x.shape[0]) % 128 >= 64)
log(op="layout", used=int((group >= 0).sum()), half_tiles=int(half_tile.sum()))
for cols in (30, 15):
  kind = np.asarray(unpack_item(paired_items(group, fill, cols, 16, 64))[2])
  cost = np.isin(kind, [ITEM_FULL, ITEM_PAIR]) + 0.5 * (kind == ITEM_HALF)
  paired = np.bincount(np.arange(kind.size) % 132, weights=cost, minlength=132)
  whole = -(-int((group >= 0).sum()) * cols // 132)  # a round robin of whole tiles
  log(op="busiest CTA", cols=cols, whole=whole, paired=float(paired.max()),
      paired_mean=float(paired.mean()))
w_t = jnp.swapaxes(w, 1, 2)[:, :2880, :]  # [E, N = 2880, K = 2880], multiplied transposed
for name, args, transpose in (("gmm N=5760", (x, w, group), False),
                              ("gmm dx N=2880", (x, w_t, group), True)):
  outs = {}
  for mode, f in (("whole", None), ("paired", fill)):
    fn = jax.jit(lambda a, ww, g, f=f, tr=transpose: kernels.gmm(
        a, ww, g, transpose_rhs=tr, implementation="pallas", zero_unused=False, tile_fill=f))
    try:
      outs[mode] = np.asarray(fn(*args).astype(jnp.float32))
      log(op=name, mode=mode, ms=gmm_probe.cupti_ms(fn, args))
    except Exception as e:  # noqa: BLE001 (the record says what failed)
      log(op=name, mode=mode, error=repr(e)[:2000])
  if len(outs) == 2:
    rows = np.repeat(np.asarray(group) >= 0, 128) & ~skipped
    log(op=name, computed_rows_equal=bool(np.array_equal(outs["whole"][rows],
                                                         outs["paired"][rows])))
