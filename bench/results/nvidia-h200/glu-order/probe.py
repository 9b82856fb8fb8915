"""tile_glu_grad's launch order: each column block walked down the rows (the default
until this probe) against each row block's column blocks in turn (`columns_fastest`,
so the programs resident together read whole rows of h, g and dh), under a few blocks.

gpt-oss-20b's dropless layout as `glu-sweep/glu.py` builds it (2I = 5760, 160 tiles of
128 rows, 143 used, each expert's last tile half full). Each time is the median of
three medians over 20 calls of CUPTI kernel time (ms); every output is compared, bit
for bit, with the rows-first order's under the same block (`same_as_default_order`,
named while rows-first was the default).

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/glu-order/probe.py OUT.json
With a second argument `extra`, it times EXTRA_BLOCKS column-first only, each dh compared
with the default block's (`extra.json`); `fewer` the same over FEWER_BLOCKS
(`fewer.json`). With `ncu`, it only runs the default block in the landed order three
times, untimed, for Nsight Compute (`ncu.txt`):
  ncu --clock-control none -k regex:moe_tile_glu_grad -c 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
    --section WarpStateStats python3 bench/results/nvidia-h200/glu-order/probe.py /dev/null ncu
"""
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench.gmm_probe import Log, cupti_ms
from moe_jax.kernels import BlockConfig
from moe_jax.kernels import glu as glu_kernels


def _blocks(*shapes):
  """BlockConfigs of (block_rows, block_h, num_warps)."""
  return [BlockConfig(block_rows=r, block_h=h, num_warps=w) for r, h, w in shapes]


DEFAULT = (32, 64, 4)
BLOCKS = _blocks(DEFAULT, (16, 128, 4), (8, 256, 4), (32, 128, 8), (64, 64, 8), (16, 64, 4))
# `probe.py OUT.json extra`: these, column-first only, against the default block (the
# blocks' thread counts and so their registers per element differ; ncu.txt).
EXTRA_BLOCKS = _blocks(DEFAULT, (32, 64, 8), (32, 32, 4), (32, 32, 2), (64, 32, 4), (64, 32, 8),
                       (16, 64, 2))
# `probe.py OUT.json fewer`: as `extra`, fewer threads per element (`extra.json` found
# more threads slower).
FEWER_BLOCKS = _blocks(DEFAULT, (32, 64, 2), (64, 64, 4), (32, 128, 4), (64, 64, 2))
ACT = (("activation", "gpt_oss_glu"), ("alpha", 1.702), ("limit", 7.0))


def _sweep_module():
  path = os.path.join(os.path.dirname(__file__), "..", "glu-sweep", "glu.py")
  spec = importlib.util.spec_from_file_location("glu_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(out_path, mode=None):
  sweep = _sweep_module()
  two_i, num_tiles, num_experts, _, _ = sweep.SHAPES["gpt-oss-20b"]
  key = jax.random.key(0)
  h = jax.random.normal(key, (num_tiles * 128, two_i), jnp.bfloat16) * 3
  g = jax.random.normal(key, (num_tiles * 128, two_i // 2), jnp.bfloat16)
  bias = jax.random.normal(key, (num_experts, two_i), jnp.bfloat16)
  te, fill = sweep.layout(num_tiles, 143, num_experts)
  rows_used = int(jnp.sum(te >= 0)) * 128
  nbytes = rows_used * (two_i * 2 + two_i // 2 * 2 + two_i * 2)  # h, g read; dh written
  if mode == "ncu":
    f = jax.jit(lambda h, b, g, te, fill: glu_kernels.tile_glu_grad(
        h, b, g, te, fill, act=ACT, config=BLOCKS[0], interpret=False, zero_unused=False))
    for _ in range(3):
      jax.block_until_ready(f(h, bias, g, te, fill))
    return
  log = Log(out_path, used_rows=rows_used, bytes=nbytes, device=str(jax.devices()[0]))
  extra, default_dh = mode in ("extra", "fewer"), None
  lists = {"extra": EXTRA_BLOCKS, "fewer": FEWER_BLOCKS}
  for config in lists.get(mode, BLOCKS):
    outs = {}
    for order in (True,) if extra else (False, True):
      f = jax.jit(lambda h, b, g, te, fill, order=order, config=config:
                  glu_kernels.tile_glu_grad(h, b, g, te, fill, act=ACT, config=config,
                                            interpret=False, zero_unused=False,
                                            columns_fastest=order))
      outs[order] = jax.block_until_ready(f(h, bias, g, te, fill))
      if extra:  # dh against the default block's (the sums' order follows the block)
        default_dh = outs[order][0] if default_dh is None else default_dh
        outs[False] = (default_dh, outs[order][1])
      ms = cupti_ms(f, (h, bias, g, te, fill))
      used = np.repeat(np.asarray(te) >= 0, 128)
      same = all(np.array_equal(np.asarray(a)[used] if a.shape[0] == used.size else np.asarray(a),
                                np.asarray(b)[used] if b.shape[0] == used.size else np.asarray(b))
                 for a, b in zip(outs[order], outs[False]))
      log(block=str(config), columns_fastest=order, ms=float(np.median(ms)), reps=ms,
          tb_per_s=nbytes / np.median(ms) / 1e9, same_as_default_order=same)


if __name__ == "__main__":
  main(*sys.argv[1:])
