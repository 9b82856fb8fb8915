"""Routing: router logits, top-k expert choice and routing weights, plus the aux losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from moe_jax import kernels
from moe_jax.config import ROUTERS, check_choice


def route(
    x: jax.Array,
    router_weight: jax.Array,
    router_bias: jax.Array,
    *,
    top_k: int,
    kind: str = "gpt_oss",
    normalize_topk: bool = True,
    precision: jax.lax.Precision | None = None,
    implementation: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Chooses K experts per token.

  The logits are accumulated and kept in float32 whatever x's dtype: top-k on
  bf16-rounded logits would create ties that are artefacts of rounding.

  Args:
    x: [T, H] tokens.
    router_weight: [E, H].
    router_bias: [E].
    top_k: K.
    kind: "gpt_oss": top-k over the logits, then softmax over the K values.
      "softmax_topk": softmax over E, then top-k, renormalised to sum 1 when
      normalize_topk (Mixtral, Qwen-MoE).
    normalize_topk: see kind.
    precision: matmul precision of the router GEMM.
    implementation: of the "gpt_oss" router's bias, top-k and softmax
      (`kernels.top_k_softmax`): "xla", "pallas" (one kernel) or None for the best on
      this backend. "softmax_topk" always runs XLA: it ranks the probabilities, whose
      rounding could tie two different logits, so its order is XLA's softmax's.

  Returns:
    logits [T, E] float32, expert indices [T, K] int32 (ties go to the lower
    index), routing weights [T, K] float32.
  """
  check_router_inputs(x, router_weight, router_bias)
  logits = router_logits(x, router_weight, precision=precision)
  return route_logits(logits, router_bias.astype(jnp.float32), top_k=top_k, kind=kind,
                      normalize_topk=normalize_topk, implementation=implementation)


def check_router_inputs(x: jax.Array, router_weight: jax.Array,
                        router_bias: jax.Array) -> None:
  """Raises a ValueError naming the argument unless x is [T, H], router_weight [E, H]
  and router_bias [E]."""
  if x.ndim != 2:
    raise ValueError(f"x must have shape [T, H], got shape {x.shape} (moe_forward flattens "
                     "leading dimensions; route does not)")
  if router_weight.ndim != 2 or router_weight.shape[1] != x.shape[1]:
    raise ValueError(f"router_weight must have shape [E, H={x.shape[1]}] (H of x), got shape "
                     f"{router_weight.shape}")
  num_experts = router_weight.shape[0]
  if router_bias.shape != (num_experts,):
    raise ValueError(f"router_bias must have shape [E]=({num_experts},), got shape "
                     f"{router_bias.shape}")


def router_logits(x: jax.Array, router_weight: jax.Array, *,
                  precision: jax.lax.Precision | None = None) -> jax.Array:
  """The router GEMM before its bias: [T, H] x [E, H] -> [T, E] float32 (x's dtype in)."""
  return jnp.einsum("th,eh->te", x, router_weight.astype(x.dtype), precision=precision,
                    preferred_element_type=jnp.float32)


def route_logits(logits: jax.Array, bias: jax.Array, *, top_k: int, kind: str = "gpt_oss",
                 normalize_topk: bool = True, implementation: str | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`route` after its GEMM: logits [T, E] and bias [E], both float32 -> (logits + bias,
  indices, weights), as `route` returns them (its arguments' meaning)."""
  check_choice("kind", kind, ROUTERS)
  kernels.resolve_implementation(implementation)  # an unknown name raises for either kind
  if logits.ndim != 2 or bias.shape != logits.shape[1:]:
    raise ValueError(f"logits must be [T, E] and bias [E] (E of logits), got shapes "
                     f"{logits.shape} and {bias.shape}")
  num_experts = logits.shape[1]
  if not 1 <= top_k <= num_experts:
    raise ValueError(f"top_k must be in [1, E={num_experts}], got {top_k}")
  if kind == "gpt_oss":
    # Equal values go to the lower index in both implementations.
    return kernels.top_k_softmax(logits, bias, top_k=top_k, implementation=implementation)
  logits = logits + bias[None, :]
  probs = jax.nn.softmax(logits, axis=-1)
  weights, indices = jax.lax.top_k(probs, top_k)
  if normalize_topk:
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return logits, indices.astype(jnp.int32), weights


def load_balancing_loss(logits: jax.Array, tokens_per_expert: jax.Array, top_k: int) -> jax.Array:
  """Switch-style auxiliary loss E * sum_i f_i * P_i.

  f_i is the fraction of the T*K routed slots that chose expert i (before any
  capacity drop), P_i the mean softmax probability of expert i over tokens.
  It is 1 for perfectly uniform routing.
  """
  if logits.ndim != 2:
    raise ValueError(f"logits must be [T, E], got shape {logits.shape}")
  num_tokens, num_experts = logits.shape
  if tokens_per_expert.shape != (num_experts,):
    raise ValueError(f"tokens_per_expert must be [E={num_experts}] (logits' last dimension), "
                     f"got shape {tokens_per_expert.shape}")
  f = tokens_per_expert.astype(jnp.float32) / (num_tokens * top_k)  # [E]
  p = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)  # [E]
  return num_experts * jnp.sum(f * p)


def router_z_loss(logits: jax.Array) -> jax.Array:
  """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2."""
  return jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))
