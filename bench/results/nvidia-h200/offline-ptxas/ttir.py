"""The Triton IR of Pallas Triton kernels, lowered on a machine without a GPU.

Lowers each named case for CUDA on this host (`_compat.lower_for_cuda`) and writes
the TTIR of every Pallas Triton kernel it holds to OUTDIR/<case>-<n>.ttir, for
`ptxas.py` to compile with a pip-installed Triton and ptxas (registers, spills).
Reads jax's private Triton lowering: a dev tool, not part of the package.

  PYTHONPATH=$PWD python3 bench/results/nvidia-h200/offline-ptxas/ttir.py OUTDIR [CASE ...]
"""
import os
import sys

import jax.numpy as jnp
from jax._src.pallas.triton import lowering  # private: this tool's only reason to exist

from moe_jax import _compat, kernels
from moe_jax.kernels import BlockConfig

T, K, E, H, R = 4096, 4, 32, 2880, 18304  # gpt-oss-20b, dropless rows
P = dict(implementation="pallas", interpret=False)


def _z(*shape, dtype=jnp.bfloat16):
  return jnp.zeros(shape, dtype)


def _slot_dots(bias: bool, rows: int = 32):
  config = BlockConfig(block_rows=rows, block_h=128, num_warps=4)
  extra = dict(bias=_z(E, H), bias_index=_z(T, K, dtype=jnp.int32)) if bias else {}
  return lambda: kernels.slot_dots(_z(R, H), _z(T, K, dtype=jnp.int32), _z(T, H),
                                   config=config, **extra, **P)


def _group_sums(rows: int, cols: int):
  config = BlockConfig(block_rows=rows, block_h=cols, num_warps=4)
  return lambda: kernels.group_sums(_z(T, H), _z(T, K, dtype=jnp.int32),
                                    _z(T, K, dtype=jnp.float32), num_groups=E, config=config,
                                    **P)


def _glu(name: str):
  """tile_glu_grad, or variant 49's tile_glu_vjp where its patch is in, on the synthetic
  dropless layout's 143 used tiles (2I = 5760)."""
  tiles, z32 = 143, _z(143, dtype=jnp.int32)
  if name == "tile_glu_grad":
    return lambda: kernels.tile_glu_grad(_z(tiles * 128, 2 * H), _z(E, 2 * H, dtype=jnp.float32),
                                         _z(tiles * 128, H), z32, z32, activation="gpt_oss_glu",
                                         zero_unused=False, **P)
  return lambda: kernels.tile_glu_vjp(_z(tiles * 128, 2 * H), _z(tiles * 128, H), z32, z32,
                                      zero_unused=False, **P)


CASES = {
    "slot_dots": _slot_dots(False), "slot_dots_bias": _slot_dots(True),
    "slot_dots_bias16": _slot_dots(True, 16),
    "group_sums": _group_sums(128, 64), "group_sums_64x64": _group_sums(64, 64),
    "group_sums_128x128": _group_sums(128, 128), "group_sums_256x64": _group_sums(256, 64),
    "tile_glu_grad": _glu("tile_glu_grad"),
}
I32, F32 = dict(dtype=jnp.int32), dict(dtype=jnp.float32)
CASES.update({  # the other row kernels of the layer, at their default tiles
    "gather_rows": lambda: kernels.gather_rows(_z(T, H), _z(R, **I32), **P),
    "scatter_rows": lambda: kernels.scatter_rows(_z(T, H), _z(T, K, **I32), num_rows=R, **P),
    "scatter_rows_scaled": lambda: kernels.scatter_rows(_z(T, H), _z(T, K, **I32),
                                                        _z(T, K, **F32), num_rows=R, **P),
    "combine_rows_bias": lambda: kernels.combine_rows(
        _z(R, H), _z(T, K, **I32), _z(T, K, **F32), bias=_z(E, H), bias_index=_z(T, K, **I32),
        **P),
    "combine_rows": lambda: kernels.combine_rows(_z(R, H), _z(T, K, **I32), **P),
})
CASES.update({  # variant 53: x's gradient, the router's dlogits . W as the matmul term
    f"combine_rows_matmul_e{e}": (lambda e=e: lambda: kernels.combine_rows(
        _z(R, H), _z(T, K, **I32), matmul_lhs=_z(T, e, **F32), matmul_rhs=_z(e, H), **P))()
    for e in (32, 64, 128, 256)
})
CASES.update({
    "tile_glu": lambda: kernels.tile_glu(_z(143 * 128, 2 * H), _z(E, 2 * H, **F32),
                                         _z(143, **I32), _z(143, **I32),
                                         activation="gpt_oss_glu", **P),
    "top_k_softmax": lambda: kernels.top_k_softmax(_z(T, E, **F32), _z(E, **F32), top_k=K, **P),
    "grouped_layout": lambda: kernels.grouped_layout(_z(T * K, **I32), E, capacity=None,
                                                     tile_rows=128, num_tiles=160, **P),
})
if hasattr(kernels, "tile_glu_vjp"):  # variant 49
  CASES["tile_glu_vjp"] = _glu("tile_glu_vjp")


def main(out_dir, names):
  os.makedirs(out_dir, exist_ok=True)
  original = lowering.lower_jaxpr_to_triton_module
  for name in names or CASES:
    written = []

    def capture(*args, _name=name, _written=written, **kwargs):
      result = original(*args, **kwargs)
      path = os.path.join(out_dir, f"{_name}-{len(_written)}.ttir")
      with open(path, "w") as f:
        f.write(result.module.operation.get_asm(enable_debug_info=False))
      _written.append(path)
      return result
    lowering.lower_jaxpr_to_triton_module = capture
    try:
      _compat.lower_for_cuda(CASES[name])
    finally:
      lowering.lower_jaxpr_to_triton_module = original
    print(name, *written)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
