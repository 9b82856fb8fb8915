"""The GPT-OSS router after its GEMM, public:

`top_k_softmax(logits [T, E], bias [E], top_k=K) -> (logits + bias, indices [T, K],
weights [T, K])`: "xla" is `reference.top_k_softmax` (XLA's top-k sort and softmax),
"pallas" the kernel of `topk.py`. Both share one custom VJP.

`implementation` and `interpret` behave as in `api`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.kernels import reference
from moe_jax.kernels import topk as _topk
from moe_jax.kernels.api import (
    Implementation,
    _expert_columns_config,
    _interpret,
    resolve_implementation,
)
from moe_jax.kernels.block_config import BlockConfig


def top_k_softmax(
    logits: jax.Array,
    bias: jax.Array,
    *,
    top_k: int,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Adds the router bias, picks each token's K largest logits, softmaxes their values.

  Args:
    logits: [T, E] float32 router logits before the bias.
    bias: [E] float32.
    top_k: K, 1 <= K <= E.
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas blocks: block_rows tokens per program, block_h >= E (a power of
      two); None picks `topk.default_top_k_config(T, E)`. Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    logits + bias: [T, E] float32.
    indices: [T, K] int32, the K largest in decreasing order; equal values go to the
      lower index, and NaNs and signed zeros are ordered as `lax.top_k` orders them
      (IEEE total order), the same bits in both implementations.
    weights: [T, K] float32, the softmax over the K picked values (within a few ulps
      across implementations: their exp functions differ).

  Differentiable in logits and bias (the indices are not); one VJP serves both
  implementations.

  Example:
    >>> z, idx, w = top_k_softmax(jnp.array([[1.0, 3.0, 2.0]]), jnp.zeros(3), top_k=2)
    >>> idx
    Array([[1, 2]], dtype=int32)
  """
  impl = resolve_implementation(implementation)
  if np.ndim(logits) != 2 or logits.dtype != jnp.float32:
    raise ValueError(f"logits must be a float32 [T, E] array, got shape {np.shape(logits)} "
                     f"and dtype {logits.dtype}")
  num_tokens, num_experts = logits.shape
  if np.shape(bias) != (num_experts,) or bias.dtype != jnp.float32:
    raise ValueError(f"bias must be a float32 [E] array with E={num_experts} (logits' last "
                     f"dimension), got shape {np.shape(bias)} and dtype {bias.dtype}")
  if (not isinstance(top_k, int) or isinstance(top_k, bool)
      or not 1 <= top_k <= num_experts):
    raise ValueError(f"top_k must be an int in [1, E={num_experts}], got {top_k!r}")
  if num_tokens == 0:
    return (logits + bias[None, :], jnp.zeros((num_tokens, top_k), jnp.int32),
            jnp.zeros((num_tokens, top_k), jnp.float32))
  if impl == "xla":
    run = functools.partial(reference.top_k_softmax, top_k=top_k)
  else:
    config = _expert_columns_config(config, _topk.default_top_k_config(num_tokens, num_experts),
                                    num_experts, "every logit of a token in one program")
    run = functools.partial(_topk.top_k_softmax, top_k=top_k, config=config,
                            interpret=_interpret(interpret))
  return _routed(run, logits, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _routed(run, logits, bias):
  return run(logits, bias)


def _routed_fwd(run, logits, bias):
  z, indices, weights = run(logits, bias)
  return (z, indices, weights), (indices, weights)


def _routed_bwd(run, res, cotangents):
  """d logits = d z + the softmax's VJP put at the picked columns; d bias = its sum
  over tokens (z = logits + bias)."""
  del run
  indices, weights = res  # [T, K] int32, [T, K] f32
  dz, _, dweights = cotangents  # [T, E], (float0), [T, K]
  dvalues = weights * (dweights - jnp.sum(dweights * weights, axis=-1, keepdims=True))
  rows = jnp.arange(indices.shape[0], dtype=jnp.int32)[:, None]  # [T, 1]
  # The K columns of a row are distinct: the scatter-add adds each value once.
  dlogits = dz.at[rows, indices].add(dvalues)  # [T, E]
  return dlogits, jnp.sum(dlogits, axis=0)


_routed.defvjp(_routed_fwd, _routed_bwd)
