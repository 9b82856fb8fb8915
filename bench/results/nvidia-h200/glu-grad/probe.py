"""Variant 34: the down projection's input gradient and the GLU's backward as one kernel
(`gmm_glu_grad`, the GLU's backward in the epilogue of the ping-pong gmm) against the
two ops it replaces (`gmm` with the weights transposed, then `tile_glu_grad` reading the
[R, I] cotangent back), on gpt-oss-20b's dropless layout (E = 32, H = I = 2880, 3-5 row
tiles per expert, 143 used of 160). CUPTI kernel ms; dh and the sums against the two
ops'. Run with MOSAIC_GPU_DUMP_PTXAS=1 for ptxas's reports.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/glu-grad/probe.py OUT.json
"""
import sys

import jax
import jax.numpy as jnp

from bench.gmm_probe import Log, cupti_ms, glu_backward_operands
from moe_jax import kernels
from moe_jax.kernels import MatmulConfig

E, TILES, H, I = 32, 160, 2880, 2880
ACT = dict(activation="gpt_oss_glu")
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__)
h, b, group, fill, g, w_down = glu_backward_operands(E, TILES, H, I)

fused = jax.jit(lambda *a: kernels.gmm_glu_grad(*a, implementation="pallas", **ACT))


@jax.jit
def two_ops(g, w, h, b, group, fill):
  g_a = kernels.gmm(g, w, group, transpose_rhs=True, implementation="pallas")
  return kernels.tile_glu_grad(h, b, g_a, group, fill, implementation="pallas", **ACT)


gmm_only = jax.jit(lambda g, w, group: kernels.gmm(g, w, group, transpose_rhs=True,
                                                   implementation="pallas"))
args = (g, w_down, h, b, group, fill)
dh1, s1 = fused(*args)
dh2, s2 = two_ops(*args)
f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
same = dict(dh_equal=bool(jnp.array_equal(dh1, dh2)),
            dh_max_diff=float(jnp.max(jnp.abs(f32(dh1) - f32(dh2)))),
            dh_max_abs=float(jnp.max(jnp.abs(f32(dh2)))),
            dh_differing=int(jnp.sum(dh1 != dh2)),
            sums_max_diff=float(jnp.max(jnp.abs(s1 - s2))))
for name, f, a in (("gmm_glu_grad", fused, args), ("gmm + tile_glu_grad", two_ops, args),
                   ("gmm (transposed) alone", gmm_only, (g, w_down, group))):
  log(op=name, ms=cupti_ms(f, a), **same)
# Smaller column blocks: fewer registers live in the epilogue.
for block_n in (128, 64):
  cfg = MatmulConfig(block_n=block_n, block_k=64, num_stages=4, backend="mosaic",
                     schedule="pingpong")
  f = jax.jit(lambda *a, cfg=cfg: kernels.gmm_glu_grad(*a, implementation="pallas",
                                                        config=cfg, **ACT))
  dh, s = f(*args)
  log(op="gmm_glu_grad", block_n=block_n, ms=cupti_ms(f, args),
      dh_differing=int(jnp.sum(dh != dh2)), dh_max_diff=float(jnp.max(jnp.abs(f32(dh) - f32(dh2)))))

# Ablations of the epilogue's GLU block (the kernel re-traced with a stand-in block;
# outputs are wrong by design): where does its time go?
from moe_jax.kernels import grouped_matmul_mgpu as mgpu  # noqa: E402

real_block = mgpu._glu_grad_block


def no_math(plgpu, pick_smem, h_smem, bias, fill, act, g, cs):  # picks, bias, join; no vjp
  shape = (g.shape[0], cs.stop - cs.start)
  gate, up = mgpu._picked_pair(plgpu, pick_smem, bias, h_smem[...], shape, cs)
  gc = g[:, cs].astype(jnp.float32)
  return join(plgpu, pick_smem, (gate * gc).astype(g.dtype), (up * gc).astype(g.dtype))


def no_bias(plgpu, pick_smem, h_smem, bias, fill, act, g, cs):  # the bias loads skipped
  shape = (g.shape[0], cs.stop - cs.start)
  hc = h_smem[...]

  def pick(gate_acc, up_acc):
    plgpu.wgmma(gate_acc, hc, pick_smem.at[0])
    plgpu.wgmma(up_acc, hc, pick_smem.at[1])
    return gate_acc[...], up_acc[...]
  gate, up = mgpu.pl.run_scoped(pick, plgpu.ACC(shape, jnp.float32), plgpu.ACC(shape, jnp.float32))
  gc = g[:, cs].astype(jnp.float32)
  return join(plgpu, pick_smem, (gate * gc).astype(g.dtype), (up * gc).astype(g.dtype))


def no_h(plgpu, pick_smem, h_smem, bias, fill, act, g, cs):  # g only: no h, bias or join
  gc = g[:, cs]
  return join(plgpu, pick_smem, gc, gc)


def join(plgpu, pick_smem, d_gate, d_up):
  def body(acc):
    plgpu.wgmma(acc, d_gate, pick_smem.at[0].transpose((1, 0)))
    plgpu.wgmma(acc, d_up, pick_smem.at[1].transpose((1, 0)))
    return acc[...]
  return mgpu.pl.run_scoped(body, plgpu.ACC((d_gate.shape[0], 2 * d_gate.shape[1]),
                                            jnp.float32)).astype(d_gate.dtype)


for name, block in (("no vjp math", no_math), ("no vjp, no bias", no_bias),
                    ("g only (no h use, bias, math)", no_h)):
  jax.clear_caches()
  mgpu._glu_grad_block = block
  f = jax.jit(lambda *a: kernels.gmm_glu_grad(*a, implementation="pallas", **ACT))
  try:
    log(op="ablation", block=name, ms=cupti_ms(f, args))
  except Exception as e:  # pylint: disable=broad-except
    log(op="ablation", block=name, error=str(e)[:300])
mgpu._glu_grad_block = real_block
