"""Pallas (Triton) kernel for `top_k_softmax`: the GPT-OSS router after its GEMM.

One program owns BT tokens and all E logits of each ([BT, EP] in registers, EP = E
rounded up to a power of two). It adds the bias, stores the biased logits, then picks
the K largest, one per step of a loop: the largest key not yet taken, the lowest
column among equal keys. Keys are the logits' bits in IEEE total order
(-NaN < -inf < ... < -0 < +0 < ... < +inf < +NaN), which is the order `lax.top_k`
sorts by, so the indices are the reference's bit for bit on any input, NaNs and
signed zeros included. Last, the softmax over the K picked values, as
`jax.nn.softmax` writes it (exp of the difference to the max, over the sum).

It replaces XLA's bias add, top-k sort, slice and softmax (four or five launches on a
GPU; bench/NOTES.md, variant 25).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import _tiles
from moe_jax.kernels.block_config import BlockConfig, next_power_of_two

KERNEL_NAME = "moe_top_k_softmax"
_LOWEST = -(2**31)  # the smallest int32 key
# Tokens per program. On an H200 (`bench/results/nvidia-h200/router-topk`), 16 rows and
# 4 warps were the fastest of {16, 32, 64, 128} rows x {2, 4} warps at every shape
# tried (E = 32, 128, 256): 1.9 us at gpt-oss-20b's T = 4096, E = 32 (3.5 at 64 rows),
# 55 us at T = 16384, E = 256 (730 at 64 rows: wider blocks spill the [BT, EP] keys).
_BLOCK_ROWS = 16


def default_top_k_config(num_tokens: int, num_experts: int) -> BlockConfig:
  """BT = 16 tokens per program (fewer if there are fewer, rounded up to a power of
  two), block_h = EP; 4 warps, 1 stage."""
  bt = min(_BLOCK_ROWS, max(1, next_power_of_two(num_tokens)))
  return BlockConfig(block_rows=bt, block_h=next_power_of_two(num_experts), num_warps=4,
                     num_stages=1)


def total_order_key(x: jax.Array) -> jax.Array:
  """int32 keys that sort as the float32 values `x` do in IEEE total order."""
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  # Negative floats sort in reverse of their bits: flip all but the sign bit.
  return jnp.where(bits >= 0, bits, jnp.bitwise_xor(bits, jnp.int32(0x7FFFFFFF)))


def _kernel(logits_ref, bias_ref, out_logits_ref, index_ref, weight_ref, *, num_tokens: int,
            num_experts: int, top_k: int, block_rows: int, experts_p2: int, k_p2: int):
  """Refs: logits [BT, EP] f32 (this program's tokens), bias [EP]; out: logits + bias
  [BT, EP], indices [BT, KP] int32, weights [BT, KP] f32 (columns past E, K masked)."""
  rows = _tiles.tail_mask(0, block_rows, num_tokens)  # [BT] or None
  col = jnp.arange(experts_p2, dtype=jnp.int32)
  cols = None if experts_p2 == num_experts else col < num_experts  # [EP] or None
  bias = _tiles.load(bias_ref, cols, 0.0)
  z = _tiles.load(logits_ref, _tiles.outer_and(rows, cols), 0.0) + bias[None, :]  # [BT, EP]
  _tiles.store(out_logits_ref, z, _tiles.outer_and(rows, cols))

  key = total_order_key(z)  # [BT, EP]
  kcol = jnp.arange(k_p2, dtype=jnp.int32)[None, :]  # [1, KP]

  def pick(k, carry):
    taken, index, value = carry  # [BT, EP] bool, [BT, KP] int32, [BT, KP] f32
    best = jnp.max(jnp.where(taken, _LOWEST, key), axis=1)  # [BT]
    hit = jnp.logical_not(taken) & (key == best[:, None])
    first = jnp.min(jnp.where(hit, col[None, :], experts_p2), axis=1)  # [BT]
    chosen = col[None, :] == first[:, None]  # [BT, EP], one column per row
    v = jnp.sum(jnp.where(chosen, z, 0.0), axis=1)  # [BT] the picked logit
    at_k = kcol == k
    return (taken | chosen, jnp.where(at_k, first[:, None], index),
            jnp.where(at_k, v[:, None], value))

  taken = jnp.broadcast_to(col[None, :] >= num_experts, (block_rows, experts_p2))
  _, index, value = jax.lax.fori_loop(
      0, top_k, pick, (taken, jnp.zeros((block_rows, k_p2), jnp.int32),
                       jnp.zeros((block_rows, k_p2), jnp.float32)))
  in_k = kcol < top_k
  vmax = jnp.max(jnp.where(in_k, value, -jnp.inf), axis=1)  # [BT]
  e = jnp.where(in_k, jnp.exp(value - vmax[:, None]), 0.0)
  weight = e / jnp.sum(e, axis=1)[:, None]  # [BT, KP]
  out_mask = _tiles.outer_and(rows, None if k_p2 == top_k else in_k[0])
  _tiles.store(index_ref, index, out_mask)
  _tiles.store(weight_ref, weight, out_mask)


@functools.partial(jax.jit, static_argnames=("top_k", "config", "interpret"))
def top_k_softmax(logits: jax.Array, bias: jax.Array, *, top_k: int, config: BlockConfig,
                  interpret: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Builds and runs the kernel; inputs are validated by the API.

  Args:
    logits: [T, E] float32 router logits before the bias.
    bias: [E] float32.
    top_k: K, 1 <= K <= E.
    config: block_rows tokens per program, block_h = EP >= E.
    interpret: run the kernel body in the Pallas interpreter.

  Returns:
    (logits + bias [T, E] f32, indices [T, K] int32, weights [T, K] f32).
  """
  num_tokens, num_experts = logits.shape
  bt, ep = config.block_rows, config.block_h
  kp = next_power_of_two(top_k)
  kernel = functools.partial(_kernel, num_tokens=num_tokens, num_experts=num_experts,
                             top_k=top_k, block_rows=bt, experts_p2=ep, k_p2=kp)
  row_block = lambda width: pl.BlockSpec((bt, width), lambda i: (i, 0))  # noqa: E731
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((num_tokens, num_experts), jnp.float32),
                 jax.ShapeDtypeStruct((num_tokens, top_k), jnp.int32),
                 jax.ShapeDtypeStruct((num_tokens, top_k), jnp.float32)),
      grid=(pl.cdiv(num_tokens, bt),),
      in_specs=[row_block(ep), pl.BlockSpec((ep,), lambda i: (0,))],
      out_specs=(row_block(ep), row_block(kp), row_block(kp)),
      compiler_params=_compat.triton_compiler_params(num_warps=config.num_warps,
                                                     num_stages=config.num_stages),
      interpret=interpret,
      name=KERNEL_NAME,
  )(logits, bias)
