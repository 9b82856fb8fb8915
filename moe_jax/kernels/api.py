"""Public row primitives: validate, pick an implementation, dispatch.

`implementation=None` picks "pallas" on a GPU backend and "xla" elsewhere. A name
given explicitly is strict: "pallas" on a machine without a GPU runs the same kernel
in the Pallas interpreter (unless `interpret=False` is forced), never the reference.
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.kernels import combine as _combine
from moe_jax.kernels import gather as _gather
from moe_jax.kernels import reference
from moe_jax.kernels import slot_dot as _slot_dot
from moe_jax.kernels.block_config import (
    GATHER_TILE_ELEMENTS,
    REDUCE_TILE_ELEMENTS,
    BlockConfig,
    default_config,
)

Implementation = Literal["xla", "pallas"]
IMPLEMENTATIONS: tuple[str, ...] = ("xla", "pallas")


def resolve_implementation(implementation: str | None) -> str:
  """The implementation to run: the name given, or the best one for this backend."""
  if implementation is None:
    return "pallas" if jax.default_backend() == "gpu" else "xla"
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation must be one of {IMPLEMENTATIONS} or None, got {implementation!r}"
    )
  return implementation


def _interpret(interpret: bool | None) -> bool:
  return jax.default_backend() != "gpu" if interpret is None else interpret


def _check_src(src: jax.Array, *, floating: bool) -> None:
  if np.ndim(src) != 2:
    raise ValueError(f"src must have shape [N, H], got shape {np.shape(src)}")
  if floating and not jnp.issubdtype(src.dtype, jnp.floating):
    raise ValueError(f"src must have a floating dtype, got {src.dtype}")


def _check_index(index: jax.Array, ndim: int, expected: str) -> None:
  if np.ndim(index) != ndim:
    raise ValueError(f"index must have shape {expected}, got shape {np.shape(index)}")
  if index.dtype != jnp.int32:
    raise ValueError(
        f"index must have dtype int32, got {index.dtype} (shape {np.shape(index)});"
        " cast it with index.astype(jnp.int32)"
    )


def _check_float(name: str, x: jax.Array, shape: tuple[int, ...], expected: str) -> None:
  if np.shape(x) != shape:
    raise ValueError(f"{name} must have shape {expected}={shape}, got shape {np.shape(x)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype (float32), got {x.dtype}")


def _check_config(config: BlockConfig | None) -> None:
  if config is not None and not isinstance(config, BlockConfig):
    raise ValueError(f"config must be a BlockConfig or None, got {type(config).__name__}")


def gather_rows(
    src: jax.Array,
    index: jax.Array,
    scale: jax.Array | None = None,
    *,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """Gathers rows: out[r] = src[index[r]] (* scale[r]); 0 where index[r] < 0.

  Without scale this is pure data movement: every implementation returns the same
  bits. With scale the product is taken in float32 and cast to src.dtype.

  Args:
    src: [N, H] source rows.
    index: [R] int32 row of src for each output row; < 0 marks an empty slot;
      >= N reads row N-1.
    scale: optional [R] floating per-row factor (computed in float32).
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas tiles; None picks `default_config(R, H, tile_elements=8192)`.
      Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    [R, H] of src.dtype.

  Example:
    >>> src = jnp.arange(6.0).reshape(3, 2)
    >>> gather_rows(src, jnp.array([2, -1], jnp.int32))
    Array([[4., 5.],
           [0., 0.]], dtype=float32)
  """
  impl = resolve_implementation(implementation)
  _check_src(src, floating=scale is not None)
  _check_index(index, 1, "[R]")
  if scale is not None:
    _check_float("scale", scale, np.shape(index), "[R]")
    scale = scale.astype(jnp.float32)
  _check_config(config)
  (num_rows,), (num_src_rows, h) = np.shape(index), np.shape(src)
  if num_rows == 0 or h == 0 or num_src_rows == 0:
    return jnp.zeros((num_rows, h), src.dtype)
  if impl == "xla":
    return reference.gather_rows(src, index, scale)
  config = config or default_config(num_rows, h, tile_elements=GATHER_TILE_ELEMENTS)
  return _gather.gather_rows(src, index, scale, config=config, interpret=_interpret(interpret))


def combine_rows(
    src: jax.Array,
    index: jax.Array,
    weight: jax.Array | None = None,
    *,
    out_dtype: jnp.dtype | None = None,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """Weighted gather-reduce: out[t] = sum_k weight[t, k] * src[index[t, k]].

  The sum runs over k = 0..K-1 in that order, in float32, on the token side: no
  atomics, no scatter-add, the same result on every run. Slots with index < 0
  contribute exactly 0, whatever their weight.

  Args:
    src: [N, H] floating source rows (e.g. expert outputs [E*C, H]).
    index: [T, K] int32 source row of each token's k-th slot; < 0 marks an empty
      slot; >= N reads row N-1.
    weight: optional [T, K] floating weights (float32 is used); None means 1.
    out_dtype: floating output dtype; None means src.dtype.
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas tiles of [T, H]; None picks
      `default_config(T, H, tile_elements=4096)`. Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    [T, H] of out_dtype.

  Example:
    >>> src = jnp.arange(6.0).reshape(3, 2)
    >>> index = jnp.array([[0, 2], [1, -1]], jnp.int32)
    >>> combine_rows(src, index, jnp.array([[1.0, 0.5], [2.0, 9.0]]))
    Array([[2. , 3.5],
           [4. , 6. ]], dtype=float32)
  """
  impl = resolve_implementation(implementation)
  _check_src(src, floating=True)
  _check_index(index, 2, "[T, K]")
  if weight is not None:
    _check_float("weight", weight, np.shape(index), "[T, K]")
    weight = weight.astype(jnp.float32)
  out_dtype = jnp.dtype(src.dtype if out_dtype is None else out_dtype)
  if not jnp.issubdtype(out_dtype, jnp.floating):
    raise ValueError(f"out_dtype must be a floating dtype, got {out_dtype}")
  _check_config(config)
  (num_tokens, top_k), (num_src_rows, h) = np.shape(index), np.shape(src)
  if num_tokens == 0 or h == 0 or top_k == 0 or num_src_rows == 0:
    return jnp.zeros((num_tokens, h), out_dtype)
  if impl == "xla":
    return reference.combine_rows(src, index, weight, out_dtype=out_dtype)
  config = config or default_config(num_tokens, h, tile_elements=REDUCE_TILE_ELEMENTS)
  return _combine.combine_rows(
      src, index, weight, out_dtype=out_dtype, config=config, interpret=_interpret(interpret)
  )


def slot_dots(
    src: jax.Array,
    index: jax.Array,
    g: jax.Array,
    *,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """Per-slot dot products: out[t, k] = dot(src[index[t, k]], g[t]) in float32.

  This is the routing-weight gradient of `combine_rows` (g is the output cotangent).
  Deterministic: the sum over H is split into fixed column tiles whose partial sums
  are added in a fixed order.

  Args:
    src: [N, H] floating source rows.
    index: [T, K] int32; < 0 marks an empty slot (its dot is 0); >= N reads row N-1.
    g: [T, H] floating.
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas tiles of [T, H]; None picks
      `default_config(T, H, tile_elements=4096)`. Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    [T, K] float32.

  Example:
    >>> src = jnp.arange(6.0).reshape(3, 2)
    >>> slot_dots(src, jnp.array([[2, -1]], jnp.int32), jnp.array([[1.0, 1.0]]))
    Array([[9., 0.]], dtype=float32)
  """
  impl = resolve_implementation(implementation)
  _check_src(src, floating=True)
  _check_index(index, 2, "[T, K]")
  (num_tokens, top_k), (num_src_rows, h) = np.shape(index), np.shape(src)
  _check_float("g", g, (num_tokens, h), "[T, H]")
  _check_config(config)
  if num_tokens == 0 or h == 0 or top_k == 0 or num_src_rows == 0:
    return jnp.zeros((num_tokens, top_k), jnp.float32)
  if impl == "xla":
    return reference.slot_dots(src, index, g)
  config = config or default_config(num_tokens, h, tile_elements=REDUCE_TILE_ELEMENTS)
  return _slot_dot.slot_dots(src, index, g, config=config, interpret=_interpret(interpret))
