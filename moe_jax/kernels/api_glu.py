"""Public bias + GLU over the grouped tile layout: validate, pick an implementation, dispatch.

`tile_glu(h [R,2I], bias [E,2I], tile_expert [R/TM]) -> [R,I]` and its gradient
`tile_glu_grad(h, bias, g [R,I], tile_expert) -> (dh [R,2I], sums [R/TM,2I])`;
"xla" is `reference.tile_glu(_grad)`, "pallas" the kernels of `glu.py`.
`gmm_glu(lhs [R,K], rhs [E,K,2I], bias [E,2I], tile_group [R/TM]) -> [R,I]` is `gmm`
then `tile_glu` in one op: on a Hopper GPU one Mosaic GPU kernel whose epilogue runs the GLU
(`grouped_matmul_mgpu.gmm_glu`, or `grouped_matmul_pingpong.gmm_glu` at 192-column
blocks), so h never reaches HBM (with `return_h`, for training, it also writes h, which
the backward's `tile_glu_grad` reads, instead of a second forward op reading it back);
elsewhere the two ops.
`implementation` and `interpret` behave as in `api`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax import _compat
from moe_jax.kernels import glu as _glu
from moe_jax.kernels import reference
from moe_jax.kernels.api import (
    Implementation,
    _check_config,
    _check_matmul_options,
    _check_mosaic,
    _check_tiles,
    _interpret,
    default_matmul_config,
    gmm,
    mosaic_gmm_kernels,
    resolve_implementation,
)
from moe_jax.kernels.block_config import BlockConfig, MatmulConfig, next_power_of_two

# A [block_rows, block_h] block holds gate, up, g and their gradients in f32. On an
# H200, [32, 64] with 4 warps ran the gpt-oss-20b layout's forward and gradient
# fastest of six blocks (`bench/results/nvidia-h200/glu-sweep`, NOTES variant 19).
_GLU_BLOCK_ROWS = 32
_GLU_BLOCK_I = 64


def default_glu_config(tile_rows: int, num_i: int) -> BlockConfig:
  """Blocks of the GLU kernels for tiles of `tile_rows` rows and I output columns.

  block_rows: the largest power of two dividing tile_rows, at most 32; block_h: 64
  columns (fewer for a smaller I); 4 warps, 1 stage.
  """
  block_rows = min(tile_rows & -tile_rows, _GLU_BLOCK_ROWS)
  block_i = min(_GLU_BLOCK_I, next_power_of_two(num_i))
  return BlockConfig(block_rows=block_rows, block_h=block_i, num_warps=4, num_stages=1)


def _check(h, bias, tile_expert, tile_fill, activation, g=None) -> tuple[int, int]:
  """Validates the GLU operands; returns (tile rows TM, I)."""
  if np.ndim(h) != 2 or not jnp.issubdtype(h.dtype, jnp.floating) or np.shape(h)[1] % 2:
    raise ValueError(f"h must be a floating [R, 2I] array (even last dimension), got shape "
                     f"{np.shape(h)} and dtype {h.dtype}")
  num_rows, two_i = np.shape(h)
  if np.ndim(bias) != 2 or np.shape(bias)[1] != two_i or not jnp.issubdtype(bias.dtype,
                                                                            jnp.floating):
    raise ValueError(f"bias must be a floating [E, 2I={two_i}] array (h's last dimension), "
                     f"got shape {np.shape(bias)} and dtype {bias.dtype}")
  if np.ndim(tile_expert) != 1 or tile_expert.dtype != jnp.int32:
    raise ValueError(f"tile_expert must be an int32 [num_tiles] array, got shape "
                     f"{np.shape(tile_expert)} and dtype {tile_expert.dtype}")
  num_tiles = np.shape(tile_expert)[0]
  if num_tiles == 0 or num_rows % num_tiles:
    raise ValueError(f"h's rows must be num_tiles * TM: got R={num_rows} rows for "
                     f"num_tiles={num_tiles} tiles")
  if tile_fill is not None and (np.shape(tile_fill) != (num_tiles,)
                                or tile_fill.dtype != jnp.int32):
    raise ValueError(f"tile_fill must be None or an int32 ({num_tiles},) array (one count per "
                     f"tile), got shape {np.shape(tile_fill)} and dtype "
                     f"{getattr(tile_fill, 'dtype', type(tile_fill).__name__)}")
  if activation not in reference.ACTIVATIONS:
    raise ValueError(f"activation must be one of {reference.ACTIVATIONS}, got {activation!r}")
  if g is not None and (np.shape(g) != (num_rows, two_i // 2)
                        or not jnp.issubdtype(g.dtype, jnp.floating)):
    raise ValueError(f"g must be a floating [R, I]={(num_rows, two_i // 2)} array (the "
                     f"output's cotangent), got shape {np.shape(g)} and dtype {g.dtype}")
  return num_rows // num_tiles, two_i // 2


def _prepare(h, bias, tile_expert, tile_fill, g, activation, alpha, limit, implementation,
             config, interpret) -> tuple[tuple, dict | None]:
  """Validates the operands; returns the hashable activation parameters and, for
  "pallas", the kernel's config and interpret flag (None for "xla")."""
  impl = resolve_implementation(implementation)
  tile_rows, num_i = _check(h, bias, tile_expert, tile_fill, activation, g)
  act = reference.act_items(activation, alpha, limit)
  if impl == "xla":
    return act, None
  _check_config(config)
  config = config or default_glu_config(tile_rows, num_i)
  if tile_rows % config.block_rows:
    raise ValueError(f"config.block_rows must divide the tile height TM={tile_rows}, got "
                     f"block_rows={config.block_rows}")
  return act, dict(config=config, interpret=_interpret(interpret))


def tile_glu(
    h: jax.Array,
    bias: jax.Array,
    tile_expert: jax.Array,
    tile_fill: jax.Array | None = None,
    *,
    activation: str,
    alpha: float = 1.702,
    limit: float = 7.0,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
) -> jax.Array:
  """GLU of h plus its tile's bias, in float32: [R, 2I] interleaved -> [R, I].

  Args:
    h: [R, 2I] floating, gate in even columns and up in odd ones, in tiles of
      TM = R / num_tiles rows.
    bias: [E, 2I] floating, added in float32.
    tile_expert: [num_tiles] int32 expert of each tile; < 0 marks an unused tile.
    tile_fill: optional [num_tiles] int32 rows of each tile that hold data.
    activation: "gpt_oss_glu" (with alpha and limit) or "swiglu".
    implementation: "xla", "pallas", or None for the best on this backend.
    config: Pallas blocks (block_rows must divide TM); None picks
      `default_glu_config(TM, I)`. Ignored by "xla".
    interpret: Pallas only: run the kernel in the interpreter. None means "when the
      default backend is not a GPU".

  Returns:
    [R, I] of h.dtype; exactly 0 on unused tiles and on rows past their tile's fill
    (whatever h holds there). The Pallas kernel does not read h on unused tiles.

  Example:
    >>> h = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> tile_glu(h, jnp.zeros((1, 2)), jnp.array([0, -1], jnp.int32), activation="swiglu")
    Array([[1.4621172],
           [0.       ]], dtype=float32)
  """
  act, pallas = _prepare(h, bias, tile_expert, tile_fill, None, activation, alpha, limit,
                         implementation, config, interpret)
  if pallas is None:
    return reference.tile_glu(h, bias, tile_expert, tile_fill, **dict(act))
  return _glu.tile_glu(h, bias, tile_expert, tile_fill, act=act, **pallas)


def tile_glu_grad(
    h: jax.Array,
    bias: jax.Array,
    g: jax.Array,
    tile_expert: jax.Array,
    tile_fill: jax.Array | None = None,
    *,
    activation: str,
    alpha: float = 1.702,
    limit: float = 7.0,
    implementation: Implementation | None = None,
    config: BlockConfig | None = None,
    interpret: bool | None = None,
    zero_unused: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """The VJP of `tile_glu` with respect to h, with each tile's column sums of it.

  Args:
    h, bias, tile_expert, tile_fill, activation, alpha, limit: as for `tile_glu`.
    g: [R, I] floating cotangent of `tile_glu`'s output (rows it zeroes are ignored).
    implementation, config, interpret: as for `tile_glu`.
    zero_unused: dh is 0 on unused tiles. False lets the Pallas kernel leave those rows
      unwritten (they then hold anything), for callers that never read them, such as
      the layer; "xla" writes zeros. The sums are 0 on unused tiles either way.

  Returns:
    dh: [R, 2I] of h.dtype, interleaved as h; 0 on unused tiles (unless zero_unused is
      False) and past the fill.
    sums: [num_tiles, 2I] float32 column sums of each tile's dh as stored (rounded to
      h.dtype first): the bias gradient is their total over each expert's tiles.
  """
  act, pallas = _prepare(h, bias, tile_expert, tile_fill, g, activation, alpha, limit,
                         implementation, config, interpret)
  if pallas is None:
    return reference.tile_glu_grad(h, bias, g, tile_expert, tile_fill, **dict(act))
  return _glu.tile_glu_grad(h, bias, g, tile_expert, tile_fill, act=act,
                            zero_unused=bool(zero_unused), **pallas)


def gmm_glu(
    lhs: jax.Array,
    rhs: jax.Array,
    bias: jax.Array,
    tile_group: jax.Array,
    tile_fill: jax.Array | None = None,
    *,
    activation: str,
    alpha: float = 1.702,
    limit: float = 7.0,
    precision: jax.lax.Precision | None = None,
    implementation: Implementation | None = None,
    config: MatmulConfig | None = None,
    glu_config: BlockConfig | None = None,
    interpret: bool | None = None,
    return_h: bool = False,
    zero_unused: bool = True,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """The experts' up-projection and its bias + GLU: `tile_glu(gmm(lhs, rhs), bias)`.

  The products are rounded to lhs's dtype before the bias is added in float32, as
  the two ops in a row do; on a Hopper GPU the Mosaic GPU kernel keeps them on chip
  and gives the same bits as the two ops (bench/NOTES.md, variant 20).

  Args:
    lhs: [R, K] floating rows in tiles of TM = R / num_tiles rows.
    rhs: [E, K, 2I] floating, gate in even columns and up in odd ones.
    bias: [E, 2I] floating.
    tile_group: [num_tiles] int32 expert of each tile, < 0 for an unused tile; tiles
      sorted by expert, unused ones last (as for `gmm`).
    tile_fill: optional [num_tiles] int32 rows of each tile that hold data.
    activation, alpha, limit: as for `tile_glu`.
    precision: as for `gmm`.
    implementation: "xla", "pallas", or None for the best on this backend.
    config: the matmul's tiles (`default_matmul_config` when None); backend "mosaic"
      runs the fused kernel, "triton" runs `gmm` then the `tile_glu` kernel.
    glu_config: the `tile_glu` kernel's blocks where it runs (Triton matmul).
    interpret: Pallas only, as for `gmm`.
    return_h: also return the products h = `gmm(lhs, rhs)` (a training forward: the
      GLU's backward needs them); the Mosaic GPU kernel then writes h from the same
      epilogue instead of a second op reading it back.
    zero_unused: as for `gmm` (both outputs).

  Returns:
    [R, I] of lhs.dtype, exactly 0 on rows past their tile's fill and, with
    zero_unused, on unused tiles; with return_h, (that, h [R, 2I] of lhs.dtype).
  """
  impl = resolve_implementation(implementation)
  tile_rows = _check_tiles(lhs, tile_group)
  if (np.ndim(rhs) != 3 or np.shape(rhs)[1] != lhs.shape[1] or np.shape(rhs)[2] % 2
      or not jnp.issubdtype(rhs.dtype, jnp.floating)):
    raise ValueError(f"rhs must be a floating [E, K={lhs.shape[1]}, 2I] array (K: lhs's "
                     f"columns; 2I even), got shape {np.shape(rhs)} and dtype {rhs.dtype}")
  _check_matmul_options(config, lhs, None)
  h = jax.ShapeDtypeStruct((lhs.shape[0], rhs.shape[2]), lhs.dtype)
  act, pallas = _prepare(h, bias, tile_group, tile_fill, None, activation, alpha, limit,
                         impl, glu_config, interpret)
  if pallas is None:
    return reference.gmm_glu(lhs, rhs, bias, tile_group, tile_fill, precision=precision,
                             return_h=return_h, **dict(act))
  interpret = pallas["interpret"]
  config = config or default_matmul_config(
      tile_rows, lhs.shape[1], rhs.shape[2], lhs.dtype,
      tiles_per_expert=tile_group.shape[0] // rhs.shape[0], interpret=interpret)
  if config.backend == "mosaic":
    _check_mosaic(config, lhs, rhs.shape[2], tile_rows, interpret)
    return mosaic_gmm_kernels(config).gmm_glu(lhs, rhs.astype(lhs.dtype), bias, tile_group,
                                              tile_fill, act=act, config=config,
                                              num_sms=_compat.num_sms(), return_h=return_h,
                                              zero_unused=bool(zero_unused))
  rows = gmm(lhs, rhs, tile_group, precision=precision, implementation="pallas",
             config=config, interpret=interpret)
  out = _glu.tile_glu(rows, bias, tile_group, tile_fill, act=act, **pallas)
  return (out, rows) if return_h else out
