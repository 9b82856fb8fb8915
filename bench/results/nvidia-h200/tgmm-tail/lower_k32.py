"""Does the tgmm's wgmma (A transposed: out [BK, BN] += rows [R, BK].T @ rows [R, BN])
lower for CUDA with R = 32 or 16 rows, given a narrower swizzle? Lowering only, on any
machine (2026-12-05, jax 0.10.2 CPU; output in `lower_k32.txt`).

  for a in "64 128" "32 128" "32 64" "16 32"; do
    PYTHONPATH=$PWD python3 bench/results/nvidia-h200/tgmm-tail/lower_k32.py $a; done

Arguments: R, and the swizzle in bytes of both operands' shared-memory tiles.
"""
import sys
import jax, jax.numpy as jnp
from jax.experimental import pallas as pl
from moe_jax import _compat
plgpu = _compat.mosaic_gpu()

ROWS, BK, BN = int(sys.argv[1]), 128, 128
SWZ = int(sys.argv[2])

def tf():
  return (plgpu.TilingTransform((8, SWZ // 2)), plgpu.SwizzleTransform(SWZ))

def kernel(a_gmem, b_gmem, o_gmem):
  def scope(a_smem, b_smem, bar, o_smem):
    plgpu.copy_gmem_to_smem(a_gmem, a_smem, bar.at[0])
    plgpu.copy_gmem_to_smem(b_gmem, b_smem, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    def run(acc):
      plgpu.wgmma(acc, a_smem.transpose((1, 0)), b_smem)
      plgpu.wgmma_wait(0)
      o_smem[...] = acc[...].astype(jnp.bfloat16)
    pl.run_scoped(run, plgpu.ACC((BK, BN), jnp.float32))
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem)
    plgpu.wait_smem_to_gmem(0)
  pl.run_scoped(scope, plgpu.SMEM((ROWS, BK), jnp.bfloat16, transforms=tf()),
                plgpu.SMEM((ROWS, BN), jnp.bfloat16, transforms=tf()),
                plgpu.Barrier(num_arrivals=2, num_barriers=1),
                plgpu.SMEM((BK, BN), jnp.bfloat16, transforms=tf()))

f = plgpu.kernel(kernel, out_shape=jax.ShapeDtypeStruct((BK, BN), jnp.bfloat16),
                 grid=(1,), grid_names=("x",))
a = jnp.zeros((ROWS, BK), jnp.bfloat16); b = jnp.zeros((ROWS, BN), jnp.bfloat16)
try:
  text = _compat.lower_for_cuda(f, a, b)
  print("ROWS", ROWS, "SWZ", SWZ, "lowers:", "mosaic_gpu" in text)
except Exception as e:
  print("ROWS", ROWS, "SWZ", SWZ, "fails:", str(e).splitlines()[0][:300])
