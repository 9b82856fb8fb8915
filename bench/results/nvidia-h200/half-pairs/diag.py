"""Why variant 50 slowed every gmm (GPU only; run with variant50.patch applied, as
`diag.sh` does). The ping-pong gmm at N = 5760 on gpt-oss-20b's synthetic dropless
layout, launched three ways in one process:

  whole   no tile_fill: the expert bands of main, no item table;
  table   tile_fill >= 65 on every tile: the item table, but every item a whole tile
          (ITEM_FULL): variant 50's pair code compiled in and never run, or variant
          50b's two-accumulator whole-tile path;
  paired  the layout's own fill: 17 half tiles paired.

If `table` is as slow as `paired`, the machinery costs (the table, or the compiled-in
pair path: code size, ptxas's injected fences); if it is as fast as `whole`, the pair
items themselves do. CUPTI ms, three medians of ten calls (the paired modes' include
the table's few XLA ops, a few microseconds). Writes the JSON log given as argv[1].

  PYTHONPATH=$PWD python3 bench/results/nvidia-h200/half-pairs/diag.py OUT.json
"""
import sys

import jax
import jax.numpy as jnp

from bench import gmm_probe
from moe_jax import kernels

log = gmm_probe.Log(sys.argv[1], device=str(jax.devices()[0]))
x, w, _, group, fill = gmm_probe.operands(32, 2880, 5760, 160, seed=1)
kept = jnp.arange(x.shape[0]) % 128 < jnp.repeat(fill, 128)
x = jnp.where(kept[:, None], x, 0).astype(x.dtype)
fills = {"whole": None, "table": jnp.maximum(fill, 65), "paired": fill}
for mode, f in fills.items():
  fn = jax.jit(lambda a, ww, g, f=f: kernels.gmm(
      a, ww, g, implementation="pallas", zero_unused=False, tile_fill=f))
  try:
    log(op="gmm N=5760", mode=mode, ms=gmm_probe.cupti_ms(fn, (x, w, group)))
  except Exception as e:  # noqa: BLE001 (the record says what failed)
    log(op="gmm N=5760", mode=mode, error=repr(e)[:2000])
