"""Hopper grouped matmuls through Pallas Mosaic GPU: TMA loads, wgmma, warp specialisation.

The same contracts as the Triton kernels of `grouped_matmul` (rows in tiles of TM rows,
each tile of one group or of none, `tile_group < 0`), for bf16/f16 operands on sm_90:

  gmm:  out[r] = lhs[r] @ rhs[g(r)]            ([R, K] x [E, K, N] -> [R, N])
        (or lhs[r] @ rhs[g(r)].T, rhs [E, N, K], for the input gradient)
  tgmm: out[e] = sum_{r: g(r) = e} lhs[r].T @ rhs[r]   ([R, K] x [R, N] -> [E, K, N])

Both are persistent: one CTA of three warpgroups per SM walks the work items; one
warpgroup issues TMA copies into a ring of `num_stages` shared-memory slots, two run
wgmma on halves of the output block and store it through shared memory with TMA.
gmm's items are the (row tile, column block) pairs in the banded order of the Triton
kernel (`grouped_matmul.tile_and_column`); its halves split the [TM, BN] tile along
rows when BN/2 is not a multiple of 64, else along columns. A tile of no group stores
zeros without reading anything. tgmm's items are (group, N block, K block), the group
slowest; each runs a pipeline over the group's rows, 64 at a time, up to the step
holding its last filled row when told the tiles' fill (`tile_fill`), and a group with
no rows stores zeros. Blocks may run past the edge of K and N (TMA zero-fills and drops),
never past a whole array. With `MatmulConfig.mma_in_flight=1` each compute warpgroup
issues a step's wgmma before waiting for the previous step's, and the ring releases a
slot one step late (`BlockSpec.delay_release`); the accumulator's read at the end waits
for all of them. (Meant to keep the tensor cores fed between steps, it measured no
faster than 0 on an H200: bench/NOTES.md, variant 13.)

`gmm_glu` is the gmm (not transposed) with the experts' bias + GLU in its epilogue:
[R, K] x [E, K, 2I] -> [R, I]. Each 64 columns of a warpgroup's accumulator, rounded to
the operand dtype, are split into their 32 gate and 32 up columns by two wgmmas with
0/1 matrices kept in shared memory (the lowering has no strided slice of a register
array); the bias is added in f32, the GLU applied, rows past the tile's fill zeroed,
and [rows, 32] blocks stored. The same bits as `gmm` then `glu.tile_glu`.

This is the cooperative schedule; `grouped_matmul_pingpong` holds the ping-pong one of
gmm and gmm_glu (`MatmulConfig.schedule`), built from this module's helpers.

Mosaic GPU has no interpreter on CPU: these kernels run on a Hopper GPU only and their
values are tested there (`pytest -m gpu`); CI checks that they trace and lower.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import reference
from moe_jax.kernels.block_config import PINGPONG_MAX_ACCUMULATOR, MatmulConfig
from moe_jax.kernels.grouped_matmul import tile_and_column

GMM_NAME = "moe_gmm_mgpu"
GMM_GLU_NAME = "moe_gmm_glu_mgpu"
TGMM_NAME = "moe_tgmm_mgpu"
# Registers kept by the TMA warpgroup; the compute warpgroups get the rest.
_MEMORY_REGISTERS = 40
# Columns of one epilogue store (a [rows, 64] bf16 block is one 128-byte swizzle row).
_EPILOGUE_N = 64
_SWIZZLE_ELEMS = 64  # 128-byte swizzle in 16-bit elements
# Output columns of one GLU epilogue step (from 2 * _GLU_N columns of h).
_GLU_N = 32
# Shared memory a CTA may use on an H100 (227 KB), less room for the barriers.
_SMEM_BYTES = 232448 - 2048


def _edge_problem(name: str, size: int, block_name: str, block: int) -> str | None:
  """Blocks may run past the edge of K or N (TMA zero-fills those reads and drops those
  stores), but the array's extent must be a whole number of 128-byte swizzle tiles,
  and at least one block wide: a layer test on the H100 got wrong weight gradients
  from N = 128 under 256-column blocks (why is not established; blocks that run
  partly past a wider array's edge pass the value tests)."""
  if size % _SWIZZLE_ELEMS:
    return f"needs {name}={size} a multiple of {_SWIZZLE_ELEMS}"
  if block > size:
    return f"needs {block_name}={block} <= {name}={size}"
  return None


def supports(lhs_dtype, k: int, n: int, tile_rows: int, config: MatmulConfig) -> str | None:
  """None if the gmm kernel takes these shapes, else why not (for errors and fallbacks)."""
  if jnp.dtype(lhs_dtype).itemsize != 2:
    return f"needs 16-bit operands, got {jnp.dtype(lhs_dtype)}"
  if tile_rows != 128:
    return f"needs row tiles of TM=128, got {tile_rows}"
  return (_edge_problem("K", k, "block_k", config.block_k)
          or _edge_problem("N", n, "block_n", config.block_n))


def _transforms(plgpu, dtype, minor: int):
  """Swizzled tiles of shared memory for blocks whose rows hold `minor` elements."""
  row_bytes = minor * jnp.dtype(dtype).itemsize
  swizzle = min(128, row_bytes)
  return (plgpu.TilingTransform((8, swizzle // jnp.dtype(dtype).itemsize)),
          plgpu.SwizzleTransform(swizzle))


def _split_rows(block_n: int) -> bool:
  """The two compute warpgroups split the output tile by rows when halving BN would
  cut a 64-column swizzle tile, else by columns (which reads less shared memory)."""
  return (block_n // 2) % _SWIZZLE_ELEMS != 0


def epilogue_n(ring_bytes: int, staging_rows: int, out_bytes: int) -> int:
  """Columns per epilogue store: 64, or 32 when the TMA ring (`ring_bytes`) and two
  double-buffered [staging_rows, 64] staging blocks (one per compute warpgroup) would
  not fit in shared memory."""
  staging = 2 * 2 * staging_rows * _EPILOGUE_N * out_bytes
  return _EPILOGUE_N if ring_bytes + staging <= _SMEM_BYTES else _EPILOGUE_N // 2


def _store(plgpu, staging, out_ref, width: int, epi_n: int, value_of) -> None:
  """Stores one warpgroup's [rows, width] block to out_ref, epi_n columns at a time,
  through the two staging slots `staging[2]` so that one TMA store runs while the next
  block is staged. value_of(columns) gives the block's values for a column slice."""
  plgpu.wait_smem_to_gmem(0, wait_read_only=True)
  for c in range(width // epi_n):
    slot = c % 2
    cs = slice(c * epi_n, (c + 1) * epi_n)
    plgpu.wait_smem_to_gmem(1, wait_read_only=True)
    staging[slot] = value_of(cs)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(staging.at[slot], out_ref.at[:, cs])


def _accumulate_then_store(plgpu, shape: tuple[int, int], out_dtype, store, epilogue=None,
                           store_h=None):
  """The compute warpgroups' context of a pipeline: a zeroed f32 accumulator of
  `shape` for the pipeline to run into, then its value in out_dtype stored, or
  `epilogue(value, columns)` for each output column slice when given (and, with
  `store_h`, the value itself stored there first)."""
  def context(run):
    @functools.partial(pl.run_scoped, acc=plgpu.ACC(shape, jnp.float32))
    def _(acc):
      run(acc)
      value = acc[...].astype(out_dtype)
      if store_h is not None:
        store_h(lambda cs: value[:, cs])
      if epilogue is None:
        store(lambda cs: value[:, cs])
      else:
        store(lambda cs: epilogue(value, cs))
  return context


def _write_pickers(plgpu, pick_smem) -> None:
  """pick_smem [2, 2G, G] (G = _GLU_N) <- the 0/1 matrices P with h[:, 2G] @ P[0] =
  h's even columns (gate) and h[:, 2G] @ P[1] its odd ones (up).

  Mosaic GPU's Pallas lowering has no strided slice or reshape of a register array,
  so the GLU epilogue splits the interleaved pairs with one small wgmma each: exact,
  since every output is one bf16 value times 1 summed with zeros in f32.
  """
  shape = (2 * _GLU_N, _GLU_N)
  rows = plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=plgpu.Layout.WGMMA)
  cols = plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=plgpu.Layout.WGMMA)
  for parity in (0, 1):
    pick_smem[parity] = jnp.where(rows == 2 * cols + parity, 1.0, 0.0).astype(pick_smem.dtype)
  plgpu.commit_smem()


def _glu_block(plgpu, pick_smem, bias, fill, act: dict, h, cs: slice):
  """The bias + GLU of output columns `cs` of one warpgroup's block: [rows, G] in h's dtype.

  h: [rows, 2 * width] of the block's gate/up products, rounded to the matmul's
  dtype (as the unfused path stores them); bias: the block's (gate, up) [width] f32
  refs in GMEM; fill: rows of the block that hold data (the rest come out 0).
  """
  rows = h.shape[0]
  shape = (rows, cs.stop - cs.start)
  hc = h[:, 2 * cs.start:2 * cs.stop]

  def pick(gate_acc, up_acc):
    plgpu.wgmma(gate_acc, hc, pick_smem.at[0])
    plgpu.wgmma(up_acc, hc, pick_smem.at[1])
    return gate_acc[...], up_acc[...]

  pair = pl.run_scoped(pick, plgpu.ACC(shape, jnp.float32), plgpu.ACC(shape, jnp.float32))
  # The bias: a vector load from GMEM, which has no optimized form.
  gate, up = (v + jax.lax.broadcast_in_dim(_compat.mosaic_gpu_load(
      b.at[cs], layout=plgpu.Layout.WGMMA.reduce(0), optimized=False), shape, [1])
              for v, b in zip(pair, bias))
  a = reference.glu_pair(gate, up, **act)
  row = plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=plgpu.Layout.WGMMA)
  return jnp.where(row < fill, a, 0.0).astype(h.dtype)


def _launch(plgpu, body, out_type, num_sms: int):
  """A persistent kernel: one CTA of three warpgroups ("wg") per SM ("sm"), writing
  `out_type` (a ShapeDtypeStruct, or a tuple of them: one output ref each, in order)."""
  return plgpu.kernel(
      body,
      out_type=out_type,
      grid=(num_sms,),
      grid_names=("sm",),
      num_threads=3,
      thread_name="wg",
      compiler_params=plgpu.CompilerParams(
          lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
  )


def _kernel(group_gmem, lhs_gmem, rhs_gmem, *refs, num_tiles: int, num_cols: int,
            tile_rows: int, block_n: int, block_k: int, k_steps: int, stages: int,
            row_band: int, transpose_rhs: bool, epi_n: int, in_flight: int,
            glu: tuple | None = None, write_h: bool = False, zero_unused: bool = True):
  """refs: out [R, N]; or, with `glu` (the activation's hashable items), fill [num_tiles],
  bias_gate [E, NO], bias_up [E, NO] (f32, NO >= num_cols * BN / 2) and out [R, N / 2],
  then with `write_h` h [R, N] (the products in lhs's dtype, as `gmm` writes them).
  Unused tiles store zeros, or nothing without `zero_unused`."""
  plgpu = _compat.mosaic_gpu()
  *glu_refs, out_gmem, h_gmem = refs if write_h else (*refs, None)
  split_rows = _split_rows(block_n)
  wg_m = tile_rows // 2 if split_rows else tile_rows
  wg_n = block_n if split_rows else block_n // 2
  out_dtype = out_gmem.dtype
  if glu is not None:  # the output holds half the columns; stores go _GLU_N at a time
    wg_out, block_out, epi_n = wg_n // 2, block_n // 2, _GLU_N
  else:
    wg_out, block_out = wg_n, block_n
  tf = _transforms(plgpu, lhs_gmem.dtype, block_k)
  a_spec = plgpu.BlockSpec((tile_rows, block_k), lambda kk: (0, kk), transforms=tf,
                           delay_release=in_flight)
  if transpose_rhs:
    b_spec = plgpu.BlockSpec((block_n, block_k), lambda kk: (0, kk), transforms=tf,
                             delay_release=in_flight)
  else:
    b_spec = plgpu.BlockSpec((block_k, block_n), lambda kk: (kk, 0),
                             transforms=_transforms(plgpu, lhs_gmem.dtype, block_n),
                             delay_release=in_flight)

  def pipeline(body, context):
    return plgpu.emit_pipeline_warp_specialized(
        body, grid=(k_steps,), memory_registers=_MEMORY_REGISTERS, in_specs=[a_spec, b_spec],
        wg_axis="wg", num_compute_wgs=2, max_concurrent_steps=stages,
        compute_context=context)

  ignore = lambda *_, **__: None
  b_shape_ref = rhs_gmem.at[0]
  position = functools.partial(tile_and_column, num_tiles=num_tiles, num_cols=num_cols,
                               row_band=row_band)

  scratch = dict(allocs=pipeline(ignore, ignore).get_allocations(lhs_gmem, b_shape_ref),
                 out_smem=plgpu.SMEM((2, 2, wg_m, epi_n), out_dtype,
                                     transforms=_transforms(plgpu, out_dtype, epi_n)))
  if glu is not None:  # each compute warpgroup's two column pickers (`_write_pickers`)
    scratch["pick_smem"] = plgpu.SMEM((2, 2, 2 * _GLU_N, _GLU_N), lhs_gmem.dtype,
                                      transforms=_transforms(plgpu, lhs_gmem.dtype, _GLU_N))

  @functools.partial(pl.run_scoped, **scratch, collective_axes="wg")
  def _scope(allocs, out_smem, pick_smem=None):
    wg = jax.lax.axis_index("wg")
    wg_rows = pl.ds(wg * wg_m, wg_m) if split_rows else slice(None)
    wg_cols = slice(None) if split_rows else pl.ds(wg * wg_n, wg_n)
    wg_out_cols = slice(None) if split_rows else pl.ds(wg * wg_out, wg_out)
    if glu is not None:
      pl.when(wg < 2)(lambda: _write_pickers(plgpu, pick_smem.at[wg]))

    @plgpu.nd_loop((num_tiles * num_cols,), collective_axes="sm")
    def _loop(info):
      (pid,) = info.index
      t, j = position(pid)
      group = group_gmem[t]
      out_tile = out_gmem.at[pl.ds(t * tile_rows, tile_rows), pl.ds(j * block_out, block_out)]
      out_tile = out_tile.at[wg_rows, wg_out_cols]

      store = functools.partial(_store, plgpu, out_smem.at[wg], out_tile, wg_out, epi_n)
      store_h = None
      if h_gmem is not None:  # h's [wg_m, wg_n] block, through the same staging
        h_tile = h_gmem.at[pl.ds(t * tile_rows, tile_rows), pl.ds(j * block_n, block_n)]
        store_h = functools.partial(_store, plgpu, out_smem.at[wg], h_tile.at[wg_rows, wg_cols],
                                    wg_n, epi_n)
      if glu is None:
        context = _accumulate_then_store(plgpu, (wg_m, wg_n), out_dtype, store)
      else:
        fill_gmem, gate_gmem, up_gmem = glu_refs
        row0 = wg * wg_m if split_rows else 0
        out0 = j * block_out + (0 if split_rows else wg * wg_out)
        bias = tuple(b.at[jnp.maximum(group, 0), pl.ds(out0, wg_out)] for b in (gate_gmem, up_gmem))
        epilogue = functools.partial(
            _glu_block, plgpu, pick_smem.at[wg], bias, fill_gmem[t] - row0, dict(glu))
        context = _accumulate_then_store(plgpu, (wg_m, wg_n), lhs_gmem.dtype, store, epilogue,
                                         store_h)

      def mma(_, a_smem, b_smem, acc):
        if transpose_rhs:
          b = b_smem.at[wg_cols].transpose((1, 0))
        else:
          b = b_smem.at[:, wg_cols]
        plgpu.wgmma(acc, a_smem.at[wg_rows], b)
        plgpu.wgmma_wait(in_flight)  # the slot released after this step is then free
        return acc

      @pl.when(group >= 0)
      def _():
        weights = rhs_gmem.at[group]
        cols = pl.ds(j * block_n, block_n)
        b_gmem = weights.at[cols, :] if transpose_rhs else weights.at[:, cols]
        pipeline(mma, context)(lhs_gmem.at[pl.ds(t * tile_rows, tile_rows), :], b_gmem,
                               allocations=allocs)

      if zero_unused:
        @pl.when(jnp.logical_and(group < 0, wg < 2))
        def _():
          for zero_store in (store,) if store_h is None else (store_h, store):
            zero_store(lambda cs: jnp.zeros((wg_m, epi_n), out_dtype))

  plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def _gmm_params(name: str, lhs: jax.Array, tile_group: jax.Array, n: int,
                config: MatmulConfig, *, transpose_rhs: bool) -> dict:
  """The static parameters of `_kernel` but its epilogue's (`epi_n`, `glu`), after
  `supports`' checks (errors name `name`)."""
  num_rows, k = lhs.shape
  (num_tiles,) = tile_group.shape
  tile_rows = num_rows // num_tiles
  why = supports(lhs.dtype, k, n, tile_rows, config)
  if why is not None:
    raise ValueError(f"the Mosaic GPU {name} {why}")
  k_steps = pl.cdiv(k, config.block_k)
  stages = min(config.num_stages, k_steps)
  return dict(
      num_tiles=num_tiles, num_cols=pl.cdiv(n, config.block_n), tile_rows=tile_rows,
      block_n=config.block_n, block_k=config.block_k, k_steps=k_steps, stages=stages,
      in_flight=min(config.mma_in_flight, stages - 1),
      row_band=(num_tiles if config.row_band in (None, "expert")
                else min(config.row_band, num_tiles)), transpose_rhs=transpose_rhs)


@functools.partial(jax.jit, static_argnames=("transpose_rhs", "out_dtype", "config", "num_sms",
                                             "zero_unused"))
def gmm(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array, *, transpose_rhs: bool,
        out_dtype, config: MatmulConfig, num_sms: int, zero_unused: bool = True) -> jax.Array:
  """Builds and runs the Mosaic GPU gmm; inputs are validated by the API.

  Args:
    lhs: [R, K] bf16/f16, R = num_tiles * 128.
    rhs: [E, K, N] (or [E, N, K] when transpose_rhs), lhs's dtype.
    tile_group: [num_tiles] int32 group of each tile, < 0 for none.
    transpose_rhs: multiply by rhs[e].T.
    out_dtype: output dtype (accumulation is float32).
    config: block_n (CTA output columns), block_k, num_stages (TMA ring depth),
      row_band and mma_in_flight; num_warps is not used (the CTA is three warpgroups).
    num_sms: CTAs of the persistent grid, one per multiprocessor.
    zero_unused: store zeros on unused tiles; False leaves their rows unwritten.

  Returns:
    [R, N] of out_dtype.
  """
  plgpu = _compat.mosaic_gpu()
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  params = _gmm_params("gmm", lhs, tile_group, n, config, transpose_rhs=transpose_rhs)
  params["zero_unused"] = zero_unused
  params["epi_n"] = epilogue_n(
      config.num_stages * (params["tile_rows"] + config.block_n) * config.block_k
      * lhs.dtype.itemsize,
      params["tile_rows"] // 2 if _split_rows(config.block_n) else params["tile_rows"],
      jnp.dtype(out_dtype).itemsize)
  num_rows = lhs.shape[0]

  def moe_gmm_mgpu(*refs):  # the kernel's name in jaxprs and profiles (GMM_NAME)
    _kernel(*refs, **params)
  return _launch(plgpu, moe_gmm_mgpu, jax.ShapeDtypeStruct((num_rows, n), out_dtype), num_sms)(
      tile_group, lhs, rhs)


@functools.partial(jax.jit, static_argnames=("act", "config", "num_sms", "return_h",
                                             "zero_unused"))
def gmm_glu(lhs: jax.Array, rhs: jax.Array, bias: jax.Array, tile_group: jax.Array,
            tile_fill: jax.Array | None, *, act: tuple, config: MatmulConfig,
            num_sms: int, return_h: bool = False,
            zero_unused: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
  """The gmm with the bias + GLU in its epilogue; inputs are validated by the API.

  Args:
    lhs: [R, K] bf16/f16, R = num_tiles * 128.
    rhs: [E, K, 2I] of lhs's dtype, gate and up columns interleaved.
    bias: [E, 2I], added in f32.
    tile_group: [num_tiles] int32 group of each tile, < 0 for none (output 0).
    tile_fill: [num_tiles] int32 rows of each tile that hold data (rows past it come
      out 0), or None for all.
    act: the activation's items (`reference.glu_pair`'s keywords).
    config, num_sms: as for `gmm`.
    return_h: also write the products h (a training forward, whose backward needs them).
    zero_unused: as for `gmm`.

  Returns:
    [R, I] of lhs's dtype: `tile_glu(gmm(lhs, rhs) in lhs's dtype, bias)`, without the
    [R, 2I] products leaving the chip; with return_h, (that, h [R, 2I]).
  """
  plgpu = _compat.mosaic_gpu()
  num_rows, n = lhs.shape[0], rhs.shape[2]
  params = _gmm_params("gmm_glu", lhs, tile_group, n, config, transpose_rhs=False)
  tile_rows = params["tile_rows"]
  check_glu_smem(config, tile_rows, tile_rows // 2 if _split_rows(config.block_n) else tile_rows,
                 lhs.dtype.itemsize)
  params.update(epi_n=_GLU_N, glu=act, write_h=return_h, zero_unused=zero_unused)

  def moe_gmm_glu_mgpu(*refs):  # the kernel's name in jaxprs and profiles (GMM_GLU_NAME)
    _kernel(*refs, **params)
  return _launch(plgpu, moe_gmm_glu_mgpu, glu_out_type(num_rows, n, lhs.dtype, return_h),
                 num_sms)(tile_group, lhs, rhs, *glu_operands(bias, tile_group, tile_fill, n,
                                                               params))


def glu_out_type(num_rows: int, n: int, dtype, return_h: bool):
  """gmm_glu's outputs: [R, N / 2], and with return_h also h [R, N], of `dtype`."""
  out = jax.ShapeDtypeStruct((num_rows, n // 2), dtype)
  return (out, jax.ShapeDtypeStruct((num_rows, n), dtype)) if return_h else out


def check_glu_smem(config: MatmulConfig, tile_rows: int, staging_rows: int, item: int) -> None:
  """Raises unless the TMA ring and the GLU epilogue (two double-buffered [staging_rows,
  _GLU_N] staging blocks, two pairs of column pickers) fit in shared memory."""
  ring = config.num_stages * (tile_rows + config.block_n) * config.block_k * item
  epilogue = (2 * 2 * staging_rows * _GLU_N + 2 * 2 * 2 * _GLU_N * _GLU_N) * item
  if ring + epilogue > _SMEM_BYTES:
    raise ValueError(
        f"the Mosaic GPU gmm_glu needs its TMA ring and epilogue in {_SMEM_BYTES} bytes of "
        f"shared memory, got {ring + epilogue} with num_stages={config.num_stages}, "
        f"block_n={config.block_n}, block_k={config.block_k}: use fewer stages")


def glu_operands(bias, tile_group, tile_fill, n: int, params: dict) -> tuple:
  """The GLU epilogue's operands after lhs and rhs: ([num_tiles] fill, [E, NO] gate bias,
  [E, NO] up bias), the biases f32 and padded to the column grid (the epilogue reads
  each block's bias columns without a bound check)."""
  padded = params["num_cols"] * params["block_n"] - n
  b = jnp.pad(bias.astype(jnp.float32), ((0, 0), (0, padded)))
  fill = (jnp.full(tile_group.shape, params["tile_rows"], jnp.int32) if tile_fill is None
          else tile_fill.astype(jnp.int32))
  return fill, b[:, 0::2], b[:, 1::2]


# Rows of the group per tgmm pipeline step (the reduction dimension of its wgmma).
_TGMM_ROWS = 64


def tgmm_supports(lhs_dtype, k: int, n: int, tile_rows: int, config: MatmulConfig
                  ) -> str | None:
  """None if the tgmm kernel takes these shapes, else why not."""
  if jnp.dtype(lhs_dtype).itemsize != 2:
    return f"needs 16-bit operands, got {jnp.dtype(lhs_dtype)}"
  if tile_rows % _TGMM_ROWS:
    return f"needs row tiles TM a multiple of {_TGMM_ROWS}, got {tile_rows}"
  if config.schedule == "pingpong":
    if config.block_k * config.block_n > PINGPONG_MAX_ACCUMULATOR:
      return (f"needs block_k * block_n <= {PINGPONG_MAX_ACCUMULATOR} for schedule='pingpong' "
              "(one warpgroup's f32 accumulator), got "
              f"{config.block_k} * {config.block_n} = {config.block_k * config.block_n}")
  elif config.block_n % (2 * _SWIZZLE_ELEMS):
    return f"needs block_n a multiple of 128 (two warpgroup halves), got {config.block_n}"
  return (_edge_problem("K", k, "block_k", config.block_k)
          or _edge_problem("N", n, "block_n", config.block_n))


def _tgmm_kernel(start_gmem, steps_gmem, lhs_gmem, rhs_gmem, out_gmem, *, num_groups: int,
                 k_blocks: int, n_blocks: int, steps_per_tile: int, block_k: int, block_n: int,
                 stages: int, epi_n: int, in_flight: int):
  plgpu = _compat.mosaic_gpu()
  wg_n = block_n // 2
  out_dtype = out_gmem.dtype
  dtype = lhs_gmem.dtype
  a_tf = _transforms(plgpu, dtype, block_k)
  b_tf = _transforms(plgpu, dtype, block_n)

  def pipeline(body, context, first_step, steps):
    """The pipeline over row blocks [first_step, first_step + steps) of _TGMM_ROWS rows."""
    return plgpu.emit_pipeline_warp_specialized(
        body, grid=(steps,), memory_registers=_MEMORY_REGISTERS,
        in_specs=[
            plgpu.BlockSpec((_TGMM_ROWS, block_k), lambda s: (first_step + s, 0), transforms=a_tf,
                            delay_release=in_flight),
            plgpu.BlockSpec((_TGMM_ROWS, block_n), lambda s: (first_step + s, 0), transforms=b_tf,
                            delay_release=in_flight),
        ],
        wg_axis="wg", num_compute_wgs=2, max_concurrent_steps=stages, compute_context=context)

  ignore = lambda *_, **__: None
  a_cols = lambda i: lhs_gmem.at[:, pl.ds(i * block_k, block_k)]  # noqa: E731
  b_cols = lambda j: rhs_gmem.at[:, pl.ds(j * block_n, block_n)]  # noqa: E731

  @functools.partial(
      pl.run_scoped,
      allocs=pipeline(ignore, ignore, 0, stages).get_allocations(a_cols(0), b_cols(0)),
      out_smem=plgpu.SMEM((2, 2, block_k, epi_n), out_dtype,
                        transforms=_transforms(plgpu, out_dtype, epi_n)),
      collective_axes="wg",
  )
  def _scope(allocs, out_smem):
    wg = jax.lax.axis_index("wg")
    wg_cols = pl.ds(wg * wg_n, wg_n)

    # Items (group, N block, K block), the K block fastest and the group slowest: the
    # CTAs resident together read the same group's rows, from L2.
    @plgpu.nd_loop((num_groups * n_blocks * k_blocks,), collective_axes="sm")
    def _loop(info):
      (pid,) = info.index
      e = pid // (n_blocks * k_blocks)
      j = (pid // k_blocks) % n_blocks
      i = pid % k_blocks
      first, steps = start_gmem[e], steps_gmem[e]
      out_tile = out_gmem.at[e, pl.ds(i * block_k, block_k), pl.ds(j * block_n, block_n)]
      store = functools.partial(_store, plgpu, out_smem.at[wg], out_tile.at[:, wg_cols], wg_n,
                                epi_n)
      context = _accumulate_then_store(plgpu, (block_k, wg_n), out_dtype, store)

      def mma(_, a_smem, b_smem, acc):
        # out block [BK, BN/2] += lhs rows [64, BK].T @ rhs rows [64, BN/2]
        plgpu.wgmma(acc, a_smem.at[:, :].transpose((1, 0)), b_smem.at[:, wg_cols])
        plgpu.wgmma_wait(in_flight)
        return acc

      @pl.when(steps > 0)
      def _():
        run = pipeline(mma, context, first * steps_per_tile, steps)
        run(a_cols(i), b_cols(j), allocations=allocs)

      @pl.when(jnp.logical_and(steps <= 0, wg < 2))
      def _():
        store(lambda cs: jnp.zeros((block_k, epi_n), out_dtype))

  plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def group_steps(tile_group: jax.Array, tile_fill: jax.Array | None, num_groups: int,
                tile_rows: int) -> tuple[jax.Array, jax.Array]:
  """([E] first tile, [E] 64-row steps) of each group's tgmm loop, int32.

  The loop runs from the group's first row to the step holding the last filled row of
  its last tile (all of its rows when tile_fill is None); a group with no tile runs none.
  """
  counts = reference.group_tiles(tile_group, num_groups)  # [E] tiles
  start = jnp.cumsum(counts, dtype=jnp.int32) - counts  # [E] first tile
  last_fill = tile_rows if tile_fill is None else tile_fill[
      jnp.clip(start + counts - 1, 0, tile_group.shape[0] - 1)]  # [E]
  rows = jnp.where(counts > 0, (counts - 1) * tile_rows + last_fill, 0)  # [E]
  return start, ((rows + _TGMM_ROWS - 1) // _TGMM_ROWS).astype(jnp.int32)


def tgmm_params(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array,
                tile_fill: jax.Array | None, *, num_groups: int, out_dtype,
                config: MatmulConfig) -> tuple[jax.Array, jax.Array, dict]:
  """([E] first tile, [E] steps, static parameters) of a tgmm kernel, after
  `tgmm_supports`' checks. Under either schedule each compute warpgroup stages its
  output through two [BK, epi_n] blocks."""
  num_rows, k = lhs.shape
  n = rhs.shape[1]
  (num_tiles,) = tile_group.shape
  tile_rows = num_rows // num_tiles
  why = tgmm_supports(lhs.dtype, k, n, tile_rows, config)
  if why is not None:
    raise ValueError(f"the Mosaic GPU tgmm {why}")
  start, steps = group_steps(tile_group, tile_fill, num_groups, tile_rows)
  out_bytes = jnp.dtype(out_dtype).itemsize
  ring = config.num_stages * _TGMM_ROWS * (config.block_k + config.block_n) * lhs.dtype.itemsize
  epi_n = epilogue_n(ring, config.block_k, out_bytes)
  staging = 2 * 2 * config.block_k * epi_n * out_bytes
  if ring + staging > _SMEM_BYTES:
    raise ValueError(
        f"the Mosaic GPU tgmm needs its TMA ring and epilogue staging in {_SMEM_BYTES} bytes "
        f"of shared memory, got {ring + staging} with num_stages={config.num_stages}, "
        f"block_k={config.block_k}, block_n={config.block_n} and {out_bytes}-byte outputs: "
        "use fewer stages or smaller blocks")
  params = dict(
      num_groups=num_groups, k_blocks=pl.cdiv(k, config.block_k),
      n_blocks=pl.cdiv(n, config.block_n), steps_per_tile=tile_rows // _TGMM_ROWS,
      block_k=config.block_k, block_n=config.block_n, stages=config.num_stages, epi_n=epi_n)
  return start, steps, params


@functools.partial(jax.jit, static_argnames=("num_groups", "out_dtype", "config", "num_sms"))
def tgmm(lhs: jax.Array, rhs: jax.Array, tile_group: jax.Array,
         tile_fill: jax.Array | None = None, *, num_groups: int, out_dtype,
         config: MatmulConfig, num_sms: int) -> jax.Array:
  """Builds and runs the Mosaic GPU tgmm; inputs are validated by the API.

  Args:
    lhs: [R, K] bf16/f16; rhs: [R, N] of lhs's dtype; R = num_tiles * TM.
    tile_group: [num_tiles] int32, each group's tiles contiguous and in group order,
      group-less tiles (< 0) last (the grouped layout).
    tile_fill: [num_tiles] int32 rows of each tile whose products may be nonzero, or
      None (all): a group's pipeline stops after the 64-row step holding the last
      filled row of its last tile.
    num_groups: E.
    out_dtype: output dtype (accumulation is float32).
    config: block_k (output rows of K per CTA item, a multiple of 64), block_n (a
      multiple of 128, split between the two compute warpgroups), num_stages.
    num_sms: CTAs of the persistent grid.

  Returns:
    [E, K, N] of out_dtype; a group with no tile gets zeros.
  """
  plgpu = _compat.mosaic_gpu()
  start, steps, params = tgmm_params(lhs, rhs, tile_group, tile_fill, num_groups=num_groups,
                                     out_dtype=out_dtype, config=config)
  params["in_flight"] = config.mma_in_flight

  def moe_tgmm_mgpu(*refs):  # the kernel's name in jaxprs and profiles (TGMM_NAME)
    _tgmm_kernel(*refs, **params)
  out_type = jax.ShapeDtypeStruct((num_groups, lhs.shape[1], rhs.shape[1]), out_dtype)
  return _launch(plgpu, moe_tgmm_mgpu, out_type, num_sms)(start, steps, lhs, rhs)
