"""Public row primitives: validate, pick an implementation, dispatch.

`implementation=None` picks "pallas" on a GPU backend and "xla" elsewhere. A name
given explicitly is strict: "pallas" on a machine without a GPU runs the same kernel
in the Pallas interpreter (unless `interpret=False` is forced), never the reference.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax import _compat
from moe_jax.kernels import combine as _combine
from moe_jax.kernels import gather as _gather
from moe_jax.kernels import grouped_matmul as _grouped_matmul
from moe_jax.kernels import grouped_matmul_mgpu as _grouped_matmul_mgpu
from moe_jax.kernels import grouped_matmul_pingpong as _grouped_matmul_pingpong
from moe_jax.kernels import reference
from moe_jax.kernels import scatter as _scatter
from moe_jax.kernels import slot_dot as _slot_dot
from moe_jax.kernels.block_config import (
    GATHER_TILE_ELEMENTS,
    MAX_GROUP_BAND,
    REDUCE_TILE_ELEMENTS,
    BlockConfig,
    MatmulConfig,
    default_config,
    next_power_of_two,
)

Implementation = Literal["xla", "pallas"]
# The least M, N and K of Triton's dot (combine_rows' matmul term).
_MIN_DOT = 16
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


def _expert_columns_config(config: BlockConfig | None, default: BlockConfig, num_experts: int,
                           why: str) -> BlockConfig:
  """`config`, checked, or `default`, for kernels that hold all E experts of a row in
  block_h columns (`why` says what each column is, for the error)."""
  _check_config(config)
  config = config or default
  if config.block_h < num_experts:
    raise ValueError(f"config.block_h must be >= num_experts={num_experts} ({why}), got "
                     f"block_h={config.block_h}")
  return config


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


def scatter_rows(
    src: jax.Array,
    dest: jax.Array,
    scale: jax.Array | None = None,
    *,
    num_rows: int,
    rows_used: jax.Array | None = None,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """Scatters rows: out[dest[t, k]] = src[t] (* scale[t, k]); rows no slot targets are 0.

  The same buffer as `gather_rows(src, index)` when `index` is dest's inverse (the
  dispatch's `gather_token` and `combine_index` are), written from the token side:
  the Pallas kernel reads each source row once instead of K times.

  Args:
    src: [T, H] source rows.
    dest: [T, K] int32 destination row of each slot; entries in [0, R) must be
      distinct (the kernel does not check: a repeated row gets one of its writers);
      entries < 0 or >= R write nothing.
    scale: optional [T, K] floating per-slot factor (computed in float32).
    num_rows: R, rows of the output.
    rows_used: optional int32 scalar (may be traced): the rows at or past it that no
      slot targets may be left unwritten (they then hold anything), for callers that
      never read them, such as the layer past its last used tile. The Pallas kernel
      skips their zeros; "xla" writes them. None: every such row is 0.
    implementation: "xla" (an XLA scatter), "pallas", or None for the best here.
    config: Pallas tiles: block_rows source rows per program; None picks
      `default_config(T, H, tile_elements=8192)`. Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    [R, H] of src.dtype.

  Example:
    >>> src = jnp.arange(4.0).reshape(2, 2)
    >>> scatter_rows(src, jnp.array([[2, -1], [0, 1]], jnp.int32), num_rows=4)
    Array([[2., 3.],
           [2., 3.],
           [0., 1.],
           [0., 0.]], dtype=float32)
  """
  impl = resolve_implementation(implementation)
  _check_src(src, floating=scale is not None)
  if np.ndim(dest) != 2 or np.shape(dest)[0] != np.shape(src)[0] or dest.dtype != jnp.int32:
    raise ValueError(f"dest must be an int32 [T={np.shape(src)[0]}, K] array, got shape "
                     f"{np.shape(dest)} and dtype {dest.dtype}")
  if scale is not None:
    _check_float("scale", scale, np.shape(dest), "[T, K]")
    scale = scale.astype(jnp.float32)
  if not isinstance(num_rows, int) or isinstance(num_rows, bool) or num_rows < 0:
    raise ValueError(f"num_rows must be an int >= 0, got {num_rows!r}")
  if rows_used is not None and (np.ndim(rows_used) != 0 or not jnp.issubdtype(
      jnp.result_type(rows_used), jnp.integer)):
    raise ValueError(f"rows_used must be None or an integer scalar, got shape "
                     f"{np.shape(rows_used)} and dtype {jnp.result_type(rows_used)}")
  _check_config(config)
  (num_tokens, h), top_k = np.shape(src), np.shape(dest)[1]
  if num_rows == 0 or h == 0 or num_tokens == 0 or top_k == 0:
    return jnp.zeros((num_rows, h), src.dtype)
  if impl == "xla":
    return reference.scatter_rows(src, dest, scale, num_rows=num_rows)
  config = config or default_config(num_tokens, h, tile_elements=GATHER_TILE_ELEMENTS)
  if rows_used is not None:
    rows_used = jnp.asarray(rows_used, jnp.int32)
  return _scatter.scatter_rows(src, dest, scale, rows_used, num_rows=num_rows, config=config,
                               interpret=_interpret(interpret))


def combine_rows(
    src: jax.Array,
    index: jax.Array,
    weight: jax.Array | None = None,
    *,
    bias: jax.Array | None = None,
    bias_index: jax.Array | None = None,
    matmul_lhs: jax.Array | None = None,
    matmul_rhs: jax.Array | None = None,
    out_dtype: jnp.dtype | None = None,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """Weighted gather-reduce: out[t] = sum_k weight[t, k] * src[index[t, k]].

  The sum runs over k = 0..K-1 in that order, in float32, on the token side: no
  atomics, no scatter-add, the same result on every run. Slots with index < 0
  contribute exactly 0, whatever their weight. With `bias`, each slot adds its bias
  row before the weight: weight[t, k] * (src[index[t, k]] + bias[bias_index[t, k]]).

  Args:
    src: [N, H] floating source rows (e.g. expert outputs [E*C, H]).
    index: [T, K] int32 source row of each token's k-th slot; < 0 marks an empty
      slot; >= N reads row N-1.
    weight: optional [T, K] floating weights (float32 is used); None means 1.
    bias: optional [B, H] floating bias rows, added in float32 (e.g. the experts'
      down bias [E, H]); given only with bias_index.
    bias_index: [T, K] int32 bias row of each slot (e.g. its expert); < 0 adds none;
      >= B reads row B-1.
    matmul_lhs, matmul_rhs: optional [T, E] floating and [E, H] bfloat16, given
      together: `matmul_lhs @ matmul_rhs` is added to the sum before its one rounding
      (e.g. the router's input gradient `dlogits @ W`). The product is accumulated in
      float32 from matmul_lhs in float32 split into two bfloat16 terms (~2^-17
      relative; bfloat16 has float32's range, float16 would overflow past 65504), so
      E small (a few hundred at most) suits.
    out_dtype: floating output dtype; None means src.dtype.
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas tiles of [T, H]; None picks
      `default_config(T, H, tile_elements=4096)`, or 2048 with a matmul term (its
      product and operands hold registers: 134 per thread at gpt-oss-20b's [32, 128]
      against 48 without, 85 at [16, 128]; bench/NOTES.md, variant 53), and at least
      16 x 16 then (the least Triton's dot takes; a config given must be too). Ignored
      by "xla".
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
  _check_bias(bias, bias_index, (num_tokens, top_k), h)
  _check_matmul(matmul_lhs, matmul_rhs, num_tokens, h)
  has_matmul = matmul_lhs is not None and np.shape(matmul_rhs)[0] > 0
  lhs = matmul_lhs.astype(jnp.float32) if has_matmul else None
  rhs = matmul_rhs if has_matmul else None
  if num_tokens == 0 or h == 0:
    return jnp.zeros((num_tokens, h), out_dtype)
  if top_k == 0 or num_src_rows == 0:  # no slot to read: the product alone, if any
    if not has_matmul:
      return jnp.zeros((num_tokens, h), out_dtype)
    return reference.matmul_term(lhs, rhs).astype(out_dtype)
  if bias is not None and np.shape(bias)[0] == 0:
    bias = bias_index = None  # no bias rows: nothing to add
  if impl == "xla":
    return reference.combine_rows(src, index, weight, out_dtype=out_dtype, bias=bias,
                                  bias_index=bias_index, lhs=lhs, rhs=rhs)
  given = config
  config = config or default_config(
      num_tokens, h, tile_elements=REDUCE_TILE_ELEMENTS // (2 if has_matmul else 1))
  if has_matmul:
    if config.block_rows < _MIN_DOT or config.block_h < _MIN_DOT:
      if given is not None:
        raise ValueError(f"config must have block_rows and block_h >= {_MIN_DOT} with a "
                         f"matmul term (Triton's dot), got {given}")
      config = dataclasses.replace(config, block_rows=max(_MIN_DOT, config.block_rows),
                                   block_h=max(_MIN_DOT, config.block_h))
    # The kernel loads [BT, EP] and [EP, BH] tiles: EP a power of two >= 16, zeros past E.
    pad = max(_MIN_DOT, next_power_of_two(lhs.shape[1])) - lhs.shape[1]
    if pad:
      lhs, rhs = jnp.pad(lhs, ((0, 0), (0, pad))), jnp.pad(rhs, ((0, pad), (0, 0)))
  return _combine.combine_rows(
      src, index, weight, bias, bias_index, lhs, rhs, out_dtype=out_dtype, config=config,
      interpret=_interpret(interpret)
  )


def _given_together(name_a: str, a, name_b: str, b) -> bool:
  """Whether both optional arrays are given; raises a ValueError naming both when only
  one is."""
  if (a is None) != (b is None):
    shape = lambda x: "None" if x is None else np.shape(x)
    raise ValueError(f"{name_a} and {name_b} must be given together, got "
                     f"{name_a}={shape(a)} and {name_b}={shape(b)}")
  return a is not None


def _check_matmul(lhs: jax.Array | None, rhs: jax.Array | None, num_tokens: int,
                  h: int) -> None:
  """combine_rows' matmul term: both or neither, [T, E] floating and [E, H] bfloat16."""
  if not _given_together("matmul_lhs", lhs, "matmul_rhs", rhs):
    return
  if np.ndim(lhs) != 2 or np.shape(lhs)[0] != num_tokens:
    raise ValueError(f"matmul_lhs must have shape [T={num_tokens}, E] (T of index), got "
                     f"shape {np.shape(lhs)}")
  if not jnp.issubdtype(lhs.dtype, jnp.floating):
    raise ValueError(f"matmul_lhs must have a floating dtype, got {lhs.dtype}")
  want = (np.shape(lhs)[1], h)
  if np.shape(rhs) != want:
    raise ValueError(f"matmul_rhs must have shape [E, H]={want} (E of matmul_lhs, H of src), "
                     f"got shape {np.shape(rhs)}")
  if rhs.dtype != jnp.bfloat16:
    raise ValueError(f"matmul_rhs must be bfloat16, got {rhs.dtype}")


def _check_bias(bias: jax.Array | None, bias_index: jax.Array | None,
                slots: tuple[int, int], h: int) -> None:
  """combine_rows' bias and bias_index: both or neither, [B, H] floating and [T, K] int32."""
  if not _given_together("bias", bias, "bias_index", bias_index):
    return
  if np.ndim(bias) != 2 or np.shape(bias)[1] != h:
    raise ValueError(f"bias must have shape [B, H={h}] (H of src), got shape {np.shape(bias)}")
  if not jnp.issubdtype(bias.dtype, jnp.floating):
    raise ValueError(f"bias must have a floating dtype, got {bias.dtype}")
  if np.shape(bias_index) != slots:
    raise ValueError(f"bias_index must have shape [T, K]={slots} (index's shape), "
                     f"got shape {np.shape(bias_index)}")
  if bias_index.dtype != jnp.int32:
    raise ValueError(f"bias_index must have dtype int32, got {bias_index.dtype}")


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


def _mosaic_config(tile_rows: int, k: int, n: int, dtype, *, transposed: bool,
                   row_band: int | None) -> MatmulConfig | None:
  """The Mosaic GPU kernels' tiles for this shape, or None where they do not apply.

  `row_band` is the even launch band a cooperative gmm takes (None for tgmm).

  From `bench/results/nvidia-h100-80gb-hbm3/mgpu-sweep/` and, for the schedule,
  `bench/results/nvidia-h200/pingpong-sweep/`. gmm: the widest column block that
  divides N (256, else 192, else 128, else 64), BK = 64, a 3-deep TMA ring at 256
  columns (a 4th slot only fits beside a narrowed epilogue, which measured 2x
  slower), else 4. Where that block is 192, the ping-pong schedule (2-4% faster at
  gpt-oss-20b's N = 2880 and 5760; gmm_glu 7% faster than the cooperative kernel
  and 5% than the ping-pong one at 128 columns and 5 stages). gmm_glu takes gmm's
  tiles. The ping-pong gmm and gmm_glu launch in bands that follow the experts' tiles
  (`row_band="expert"`; 7% less time and energy in gpt-oss-20b's forward gmm_glu
  than the even band of `row_band`, bench/NOTES.md variant 44); the cooperative ones
  keep `row_band`. tgmm: ping-pong [128, 192] output blocks (narrower where K or N is)
  with a 4-deep ring, 22-27% faster than the cooperative [128, 256] / 3 on
  gpt-oss-20b's weight gradients (`bench/results/nvidia-h200/tgmm-pingpong/`). No block
  is wider than its array (see `grouped_matmul_mgpu`).
  """
  if transposed:
    config = MatmulConfig(block_n=next(b for b in (192, 128, 64) if b <= max(n, 64)),
                          block_k=128 if k >= 128 else 64, num_stages=4, backend="mosaic",
                          schedule="pingpong")
    ok = _grouped_matmul_mgpu.tgmm_supports(dtype, k, n, tile_rows, config) is None
  else:
    block_n = next((b for b in (256, 192, 128, 64) if n % b == 0), 64)
    pingpong = block_n == 192
    config = MatmulConfig(block_n=block_n, block_k=64, num_stages=3 if block_n == 256 else 4,
                          row_band="expert" if pingpong and row_band is not None else row_band,
                          backend="mosaic",
                          schedule="pingpong" if pingpong else "cooperative")
    ok = _grouped_matmul_mgpu.supports(dtype, k, n, tile_rows, config) is None
  return config if ok else None


def mosaic_gmm_kernels(config: MatmulConfig):
  """The module of the Mosaic GPU gmm, gmm_glu and tgmm of `config.schedule`."""
  if config.schedule == "pingpong":
    return _grouped_matmul_pingpong
  return _grouped_matmul_mgpu


def default_matmul_config(tile_rows: int, k: int, n: int, dtype, *,
                          transposed: bool = False,
                          tiles_per_expert: int | None = None,
                          interpret: bool = False) -> MatmulConfig:
  """Tiles for `gmm` (or, with transposed, `tgmm`) with row tile TM, reduction K, N.

  On a Hopper GPU (not interpreting), 16-bit operands with K, N multiples of 64 run
  the Mosaic GPU kernels (`_mosaic_config`; gmm also needs TM = 128); everything
  else runs Triton.

  Triton, from a sweep on an H100 (bench/NOTES.md): gmm runs best with BN = 256,
  BK = 64, 8 warps, 4 stages in bf16 (48 KB of shared memory per stage at TM = 128);
  tgmm, whose loop loads [TM, BK] and [TM, BN] tiles, with BK = BN = 128 and 3
  stages. float32 tiles take twice the bytes, so they are halved. All shrink for
  small K, N.

  gmm's launch order: a band of about one expert's row tiles (`tiles_per_expert`,
  the average number of row tiles per expert, clamped to [1, 16]; 1 when unknown),
  so that the ~132 programs resident on an H100 read one expert's weight columns
  and a few row tiles instead of one column block of many experts (which re-reads
  lhs from HBM once per column block). The Mosaic ping-pong kernels take the exact
  bands instead, one per expert's run of tiles (`row_band="expert"`).
  """
  row_band = None if transposed else max(1, min(MAX_GROUP_BAND, tiles_per_expert or 1))
  if not interpret and _compat.is_hopper():
    config = _mosaic_config(tile_rows, k, n, dtype, transposed=transposed, row_band=row_band)
    if config is not None:
      return config
  wide = jnp.dtype(dtype).itemsize >= 4
  if transposed:
    block_k, block_n, stages = (64, 64, 3) if wide else (128, 128, 3)
  else:
    block_k, block_n, stages = (32, 128, 3) if wide else (64, 256, 4)
  block_k = min(block_k, max(16, next_power_of_two(k)))
  block_n = min(block_n, max(16, next_power_of_two(n)))
  num_warps = 8 if tile_rows >= 64 and block_n >= 128 else 4
  return MatmulConfig(block_n=block_n, block_k=block_k, num_warps=num_warps,
                      num_stages=stages, row_band=row_band)


def _check_mosaic(config: MatmulConfig, lhs: jax.Array, n: int, tile_rows: int,
                  interpret: bool, *, transposed: bool = False) -> None:
  """Errors for a config with backend="mosaic" that cannot run here or on these shapes."""
  if interpret:
    raise ValueError("config.backend='mosaic' has no interpreter: expected interpret=False"
                     " on a Hopper GPU, got interpret=True (use backend='triton')")
  check = _grouped_matmul_mgpu.tgmm_supports if transposed else _grouped_matmul_mgpu.supports
  why = check(lhs.dtype, lhs.shape[1], n, tile_rows, config)
  if why is None and not _compat.is_hopper():
    why = f"needs a Hopper (sm_90) GPU, got {jax.devices()[0]}"
  if why is not None:
    raise ValueError(f"config.backend='mosaic': the Mosaic GPU {'t' if transposed else ''}gmm"
                     f" {why}")


def _check_matmul_options(config, lhs: jax.Array, out_dtype) -> jnp.dtype:
  """Validates a grouped matmul's config and returns its output dtype."""
  if config is not None and not isinstance(config, MatmulConfig):
    raise ValueError(f"config must be a MatmulConfig or None, got {type(config).__name__}")
  out_dtype = jnp.dtype(lhs.dtype if out_dtype is None else out_dtype)
  if not jnp.issubdtype(out_dtype, jnp.floating):
    raise ValueError(f"out_dtype must be a floating dtype, got {out_dtype}")
  return out_dtype


def _check_tiles(lhs: jax.Array, tile_group: jax.Array) -> int:
  """Validates lhs [R, K] against tile_group [R/TM]; returns TM."""
  if np.ndim(lhs) != 2 or not jnp.issubdtype(lhs.dtype, jnp.floating):
    raise ValueError(f"lhs must be a floating [R, K] array, got shape {np.shape(lhs)} and "
                     f"dtype {lhs.dtype}")
  if np.ndim(tile_group) != 1 or tile_group.dtype != jnp.int32:
    raise ValueError(f"tile_group must be an int32 [num_tiles] array, got shape "
                     f"{np.shape(tile_group)} and dtype {tile_group.dtype}")
  num_rows, num_tiles = lhs.shape[0], tile_group.shape[0]
  tile_rows = num_rows // max(num_tiles, 1)
  if num_tiles == 0 or tile_rows * num_tiles != num_rows or tile_rows < 16 or (
      tile_rows & (tile_rows - 1)):
    raise ValueError(
        f"lhs rows must be num_tiles * TM with TM a power of two >= 16; got R={num_rows} "
        f"rows for num_tiles={num_tiles} tiles")
  return tile_rows


def _check_fill(tile_fill: jax.Array | None, tile_group: jax.Array) -> None:
  """tile_fill must be None or int32 shaped like tile_group."""
  if tile_fill is not None and (np.shape(tile_fill) != tile_group.shape
                                or tile_fill.dtype != jnp.int32):
    raise ValueError(f"tile_fill must be None or an int32 {tile_group.shape} array (one count "
                     f"per tile of tile_group), got shape {np.shape(tile_fill)} and dtype "
                     f"{getattr(tile_fill, 'dtype', type(tile_fill).__name__)}")


def gmm(
    lhs: jax.Array,
    rhs: jax.Array,
    tile_group: jax.Array,
    *,
    transpose_rhs: bool = False,
    out_dtype: jnp.dtype | None = None,
    precision: jax.lax.Precision | None = None,
    implementation: Implementation | None = None,
    config: MatmulConfig | None = None,
    interpret: bool | None = None,
    zero_unused: bool = True,
) -> jax.Array:
  """Grouped matmul over row tiles: out[r] = lhs[r] @ rhs[tile_group[r // TM]].

  The rows of lhs come in tiles of TM = R / num_tiles rows; a tile belongs to one
  group (expert) or, where tile_group < 0, to none, and its output rows are 0. The
  tiles must be sorted by group with the group-less tiles last (the grouped
  dispatch lays them out so; "xla" relies on it, "pallas" does not).

  Args:
    lhs: [R, K] floating rows.
    rhs: [E, K, N] per-group matrices, or [E, N, K] when transpose_rhs.
    tile_group: [R / TM] int32 group of each tile, in [0, E), or < 0 for none; TM a
      power of two >= 16. Values are not checked on device (shapes only): a group
      >= E gives an undefined result, and so do unsorted tiles on "xla".
    transpose_rhs: multiply by rhs[e].T (the input gradient of a gmm).
    out_dtype: output dtype, lhs.dtype when None; accumulation is float32.
    precision: lax precision of the products (None: the backend default).
    implementation: "xla" (`lax.ragged_dot`), "pallas", or None for the best here.
    config: Pallas tiles; None picks `default_matmul_config` (tuned on an H100).
      Ignored by "xla".
    interpret: Pallas only: run in the interpreter; None means "when not on a GPU".
    zero_unused: the unused tiles' output rows are 0. False lets a kernel leave them
      unwritten (they then hold anything): for callers that never read them, such as
      the layer. The Mosaic GPU kernels skip those stores; the others write zeros.

  Returns:
    [R, N] of out_dtype.
  """
  impl = resolve_implementation(implementation)
  tile_rows = _check_tiles(lhs, tile_group)
  if np.ndim(rhs) != 3 or not jnp.issubdtype(rhs.dtype, jnp.floating):
    raise ValueError(f"rhs must be a floating [E, K, N] array, got shape {np.shape(rhs)}")
  k_axis = 2 if transpose_rhs else 1
  if rhs.shape[k_axis] != lhs.shape[1]:
    raise ValueError(f"rhs must have K={lhs.shape[1]} (lhs columns) on axis {k_axis}"
                     f"{' (transpose_rhs)' if transpose_rhs else ''}, got shape {rhs.shape}")
  out_dtype = _check_matmul_options(config, lhs, out_dtype)
  if impl == "xla":
    return reference.gmm(lhs, rhs, tile_group, transpose_rhs=transpose_rhs,
                         out_dtype=out_dtype, precision=precision)
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  interpret = _interpret(interpret)
  config = config or default_matmul_config(
      tile_rows, lhs.shape[1], n, lhs.dtype,
      tiles_per_expert=tile_group.shape[0] // rhs.shape[0], interpret=interpret)
  if config.backend == "mosaic":
    _check_mosaic(config, lhs, n, tile_rows, interpret)
    return mosaic_gmm_kernels(config).gmm(lhs, rhs.astype(lhs.dtype), tile_group,
                                          transpose_rhs=transpose_rhs, out_dtype=out_dtype,
                                          config=config, num_sms=_compat.num_sms(),
                                          zero_unused=bool(zero_unused))
  return _grouped_matmul.gmm(lhs, rhs.astype(lhs.dtype), tile_group,
                             transpose_rhs=transpose_rhs, out_dtype=out_dtype,
                             precision=precision, config=config, interpret=interpret)


def tgmm(
    lhs: jax.Array,
    rhs: jax.Array,
    tile_group: jax.Array,
    *,
    num_groups: int,
    tile_fill: jax.Array | None = None,
    out_dtype: jnp.dtype | None = None,
    precision: jax.lax.Precision | None = None,
    implementation: Implementation | None = None,
    config: MatmulConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """Per-group outer products: out[e] = sum over rows r of group e of lhs[r].T @ rhs[r].

  The weight gradient of `gmm`. Tiles as for `gmm`, sorted by group (required by both
  implementations: each group's tiles are contiguous), group-less tiles last and
  ignored. A group with no tile gets zeros.

  Args:
    lhs: [R, K] floating rows.
    rhs: [R, N] floating rows.
    tile_group: [R / TM] int32 group of each tile, in [0, E), or < 0 for none; not
      checked on device: a group >= E, or unsorted tiles, give an undefined result.
    num_groups: E.
    tile_fill: optional [R / TM] int32 rows of each tile that hold data (the grouped
      layout's `DispatchMeta.tile_fill`). Past its fill a tile's rows must be zero in
      lhs or in rhs, so that their products vanish; kernels may skip them (the Mosaic
      kernel stops each group's loop after its last filled 64-row step; "xla" and
      Triton sum every row). None: every row may hold data.
    out_dtype: output dtype, lhs.dtype when None; accumulation is float32.
    precision, implementation, config, interpret: as for `gmm` (BK tiles K here).

  Returns:
    [E, K, N] of out_dtype.
  """
  impl = resolve_implementation(implementation)
  tile_rows = _check_tiles(lhs, tile_group)
  _check_fill(tile_fill, tile_group)
  if np.ndim(rhs) != 2 or rhs.shape[0] != lhs.shape[0]:
    raise ValueError(f"rhs must be [R={lhs.shape[0]}, N], got shape {np.shape(rhs)}")
  if not isinstance(num_groups, int) or num_groups < 1:
    raise ValueError(f"num_groups must be an int >= 1, got {num_groups!r}")
  out_dtype = _check_matmul_options(config, lhs, out_dtype)
  if impl == "xla":
    return reference.tgmm(lhs, rhs, tile_group, num_groups=num_groups, out_dtype=out_dtype,
                          precision=precision)
  interpret = _interpret(interpret)
  config = config or default_matmul_config(tile_rows, lhs.shape[1], rhs.shape[1], lhs.dtype,
                                           transposed=True, interpret=interpret)
  if config.backend == "mosaic":
    _check_mosaic(config, lhs, rhs.shape[1], tile_rows, interpret, transposed=True)
    return mosaic_gmm_kernels(config).tgmm(
        lhs, rhs.astype(lhs.dtype), tile_group, tile_fill, num_groups=num_groups,
        out_dtype=out_dtype, config=config, num_sms=_compat.num_sms())
  return _grouped_matmul.tgmm(lhs, rhs.astype(lhs.dtype), tile_group, num_groups=num_groups,
                              out_dtype=out_dtype, precision=precision, config=config,
                              interpret=interpret)
