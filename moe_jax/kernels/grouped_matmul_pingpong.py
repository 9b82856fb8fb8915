"""The Mosaic GPU gmm, gmm_glu and tgmm with a ping-pong schedule (sm_90).

Same contracts as `grouped_matmul_mgpu.gmm` / `gmm_glu` / `tgmm`. The cooperative
kernels there split each output block between their two compute warpgroups, which
then run the block's epilogue together while the tensor cores idle, and (tgmm) start
a fresh pipeline per item. Here each compute warpgroup owns whole items, taking the
CTA's used items in turn (the used-item count's parity), so one warpgroup's epilogue
runs while the other's main loop has the tensor cores, and the ring runs on from one
item into the next.

One TMA warpgroup walks the CTA's items and fills a ring of `num_stages` slots, in
item order; a slot's "full" barrier is the owning warpgroup's own (a Pallas barrier
tracks its phase per waiting thread, so a warpgroup must wait on every phase of the
barriers it waits on), its "consumed" barrier is shared (only the TMA warpgroup waits
on it). A compute warpgroup keeps one step's wgmma in flight and releases the slot
of the step before. tgmm's ring runs on across items, so a group's few 64-row steps
(8 on gpt-oss-20b) no longer pay a pipeline fill each (bench/NOTES.md, variant 32).

A warpgroup's whole-tile f32 accumulator is BN registers per thread (hence BN <= 192:
at 256 the plain gmm ran 7x slower; a tgmm [BK, BN] block holds at most 128 * 192),
so the TMA warpgroup gives up all but 24 registers and each compute warpgroup gets 240. At 232 (the TMA warpgroup keeping 40)
ptxas serialized the 192-column gmm_glu's wgmmas for want of registers, and it ran
1.3x slower (bench/NOTES.md, variants 27-31). gmm_glu accumulates in two [64, BN]
halves, both rounded to h before the epilogue, which then runs half by half (with
`return_h`, a training forward, each half's h is stored first, through the same staging).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from moe_jax import _compat
from moe_jax.kernels import grouped_matmul_mgpu as mgpu
from moe_jax.kernels.block_config import MAX_GROUP_BAND, MatmulConfig
from moe_jax.kernels.grouped_matmul import banded_tile_and_column, group_bands, tile_and_column

GMM_NAME = "moe_gmm_pingpong"
GMM_GLU_NAME = "moe_gmm_glu_pingpong"
TGMM_NAME = "moe_tgmm_pingpong"
# Registers per thread: the TMA warpgroup keeps setmaxnreg's least, the two compute
# warpgroups share the rest (65536 / 128 = 512 per warpgroup-thread in all, rounded
# down to 8). At 40 / 232 ptxas serialized the 192-column gmm_glu's wgmmas for want of
# registers (bench/NOTES.md, variant 31).
_MEMORY_REGISTERS = 24
_COMPUTE_REGISTERS = (512 - _MEMORY_REGISTERS) // 2 // 8 * 8


def _walk(plgpu, num_items: int, item, body) -> None:
  """Runs body(info, used, steps, owner, first_step) for each of the CTA's items, in order.

  item(pid) -> (info, used, steps): whether the item is used, and the ring steps it
  takes if so. Every warpgroup walks the same items and counts the same ring steps;
  the used items alternate between the compute warpgroups (`owner`, the used-item
  count's parity).
  """
  @plgpu.nd_loop((num_items,), collective_axes="sm", init_carry=(jnp.int32(0), jnp.int32(0)))
  def _loop(loop_info, carry):
    step, used_count = carry
    (pid,) = loop_info.index
    info, used, steps = item(pid)
    body(info, used, steps, used_count % 2, step)
    is_used = used.astype(jnp.int32)
    return step + is_used * steps, used_count + is_used


def _fill(plgpu, ring, owner, first_step, steps, copies) -> None:
  """The TMA warpgroup's part of one item: ring steps [first_step, first_step + steps),
  each waiting for its slot to be consumed, then issuing copies(kk) (pairs of source
  ref and ring buffer) onto the owner's "full" barrier of the slot."""
  full, consumed, stages = ring

  @pl.loop(0, steps)
  def _(kk):
    step = first_step + kk
    slot = step % stages

    @pl.when(step >= stages)
    def _():
      plgpu.barrier_wait(consumed.at[slot])
    for src, ring_smem in copies(kk):
      plgpu.copy_gmem_to_smem(src, ring_smem.at[slot], full.at[owner * stages + slot])


def _consume(plgpu, ring, wg, first_step, steps, mma, accs, groups: int):
  """A compute warpgroup's main loop over one item's ring steps: mma(slot, accs)
  issues a step's `groups` wgmma groups; one step stays in flight, and the slot of
  the step before is released. Returns with every product done and every slot
  released; returns the accumulators (the loop's carry)."""
  full, consumed, stages = ring

  def step_fn(kk, accs):
    step = first_step + kk
    slot = step % stages
    plgpu.barrier_wait(full.at[wg * stages + slot])
    mma(slot, accs)
    plgpu.wgmma_wait(groups)  # the step before's products are done: free its slot

    @pl.when(kk > 0)
    def _():
      plgpu.barrier_arrive(consumed.at[(step + stages - 1) % stages])
    return accs

  accs = jax.lax.fori_loop(0, steps, step_fn, accs)
  plgpu.wgmma_wait(0)
  plgpu.barrier_arrive(consumed.at[(first_step + steps - 1) % stages])
  return accs


def _ring(plgpu, stages: int) -> dict:
  """The TMA ring's barriers: a slot's "full" one per compute warpgroup (a Pallas
  barrier tracks its phase per waiting thread, so a warpgroup must wait on every
  phase of the barriers it waits on; two copies arrive on it), its "consumed" one
  shared (only the TMA warpgroup waits on it)."""
  return dict(full=plgpu.Barrier(num_arrivals=2, num_barriers=2 * stages),
              consumed=plgpu.Barrier(num_arrivals=1, num_barriers=stages))


def _kernel(group_gmem, lhs_gmem, rhs_gmem, *refs, num_tiles: int, num_cols: int,
            tile_rows: int, block_n: int, block_k: int, k_steps: int, stages: int,
            row_band: int, transpose_rhs: bool, epi_n: int, glu: tuple | None = None,
            write_h: bool = False, zero_unused: bool = True, bands: bool = False):
  """refs and `zero_unused` as `grouped_matmul_mgpu._kernel`'s; with `bands`
  (row_band="expert"), the bands' first tiles and sizes (`group_bands`) come first."""
  plgpu = _compat.mosaic_gpu()
  band_refs, refs = (refs[:2], refs[2:]) if bands else ((), refs)
  *glu_refs, out_gmem, h_gmem = refs if write_h else (*refs, None)
  out_dtype = out_gmem.dtype
  dtype = lhs_gmem.dtype
  block_out = block_n // 2 if glu is not None else block_n
  # gmm_glu accumulates in two 64-row halves, both rounded to h before the epilogue,
  # which then runs half by half (its pickers' products and temporaries for one half).
  halves = 1 if glu is None else 2
  half_rows = tile_rows // halves
  a_tf = mgpu._transforms(plgpu, dtype, block_k)
  b_shape = (block_n, block_k) if transpose_rhs else (block_k, block_n)
  b_tf = a_tf if transpose_rhs else mgpu._transforms(plgpu, dtype, block_n)
  if bands:
    position = functools.partial(banded_tile_and_column, num_cols=num_cols,
                                 band_start=band_refs[0], band_size=band_refs[1])
  else:
    position = functools.partial(tile_and_column, num_tiles=num_tiles, num_cols=num_cols,
                                 row_band=row_band)
  scratch = dict(
      a_smem=plgpu.SMEM((stages, tile_rows, block_k), dtype, transforms=a_tf),
      b_smem=plgpu.SMEM((stages, *b_shape), dtype, transforms=b_tf),
      **_ring(plgpu, stages),
      out_smem=plgpu.SMEM((2, halves, 2, tile_rows // halves, epi_n), out_dtype,
                          transforms=mgpu._transforms(plgpu, out_dtype, epi_n)))
  if glu is not None:
    scratch["pick_smem"] = plgpu.SMEM((2, 2, 2 * mgpu._GLU_N, mgpu._GLU_N), dtype,
                                      transforms=mgpu._transforms(plgpu, dtype, mgpu._GLU_N))

  @functools.partial(pl.run_scoped, **scratch, collective_axes="wg")
  def _scope(a_smem, b_smem, full, consumed, out_smem, pick_smem=None):
    wg = jax.lax.axis_index("wg")
    ring = (full, consumed, stages)

    def item(pid):
      t, j = position(pid)
      group = group_gmem[t]
      return (t, j, group), group >= 0, k_steps  # static: every used tile takes K/BK steps
    walk = functools.partial(_walk, plgpu, num_tiles * num_cols, item)

    @pl.when(wg == 2)
    def _memory():
      plgpu.set_max_registers(_MEMORY_REGISTERS, action="decrease")

      def body(info, used, steps, owner, first_step):
        t, j, group = info

        @pl.when(used)
        def _():
          rows = lhs_gmem.at[pl.ds(t * tile_rows, tile_rows)]
          weights = rhs_gmem.at[group]
          cols = pl.ds(j * block_n, block_n)

          def copies(kk):
            ks = pl.ds(kk * block_k, block_k)
            b_src = weights.at[cols, ks] if transpose_rhs else weights.at[ks, cols]
            return (rows.at[:, ks], a_smem), (b_src, b_smem)
          _fill(plgpu, ring, owner, first_step, steps, copies)
      walk(body)

    @pl.when(wg < 2)
    def _compute():
      plgpu.set_max_registers(_COMPUTE_REGISTERS, action="increase")
      if glu is not None:
        mgpu._write_pickers(plgpu, pick_smem.at[wg])

      def body(info, used, steps, owner, first_step):
        t, j, group = info
        out_tile = out_gmem.at[pl.ds(t * tile_rows, tile_rows), pl.ds(j * block_out, block_out)]

        def store(half, value_of, out=out_tile, width=block_out):
          mgpu._store(plgpu, out_smem.at[wg, half], out.at[pl.ds(half * half_rows, half_rows)],
                      width, epi_n, value_of)

        def store_h(half, value_of):  # h's [half_rows, BN] half, through the same staging
          if h_gmem is not None:
            h_tile = h_gmem.at[pl.ds(t * tile_rows, tile_rows), pl.ds(j * block_n, block_n)]
            store(half, value_of, h_tile, block_n)
        mine = owner == wg

        @pl.when(jnp.logical_and(mine, used))
        def _():
          def mma(slot, accs):
            b = b_smem.at[slot]
            b = b.transpose((1, 0)) if transpose_rhs else b
            for half, acc in enumerate(accs):
              plgpu.wgmma(acc, a_smem.at[slot].at[pl.ds(half * half_rows, half_rows)], b)

          def run(*accs):
            accs = _consume(plgpu, ring, wg, first_step, steps, mma, accs, halves)
            if glu is None:
              value = accs[0][...]
              store(0, lambda cs: value[:, cs].astype(out_dtype))
              return
            fill_gmem, gate_gmem, up_gmem = glu_refs
            bias = tuple(b.at[jnp.maximum(group, 0), pl.ds(j * block_out, block_out)]
                         for b in (gate_gmem, up_gmem))
            # Both halves to h first, so that no f32 accumulator is live beside the
            # epilogue's pickers and temporaries.
            hs = [acc[...].astype(dtype) for acc in accs]
            for half, h in enumerate(hs):
              store_h(half, lambda cs, h=h: h[:, cs])
              store(half, functools.partial(mgpu._glu_block, plgpu, pick_smem.at[wg], bias,
                                            fill_gmem[t] - half * half_rows, dict(glu), h))
          pl.run_scoped(run, *(plgpu.ACC((half_rows, block_n), jnp.float32)
                               for _ in range(halves)))

        if zero_unused:
          @pl.when(jnp.logical_and(mine, jnp.logical_not(used)))
          def _():
            zeros = lambda cs: jnp.zeros((half_rows, epi_n), out_dtype)  # noqa: E731
            for half in range(halves):
              store_h(half, zeros)
              store(half, zeros)
      walk(body)

  plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def _tgmm_kernel(start_gmem, steps_gmem, lhs_gmem, rhs_gmem, out_gmem, *, num_groups: int,
                 k_blocks: int, n_blocks: int, steps_per_tile: int, block_k: int, block_n: int,
                 stages: int, epi_n: int):
  """`grouped_matmul_mgpu._tgmm_kernel`'s items, each owned by one compute warpgroup
  with a whole [BK, BN] accumulator; the ring runs on across items."""
  plgpu = _compat.mosaic_gpu()
  out_dtype = out_gmem.dtype
  dtype = lhs_gmem.dtype
  rows = mgpu._TGMM_ROWS
  scratch = dict(
      a_smem=plgpu.SMEM((stages, rows, block_k), dtype,
                        transforms=mgpu._transforms(plgpu, dtype, block_k)),
      b_smem=plgpu.SMEM((stages, rows, block_n), dtype,
                        transforms=mgpu._transforms(plgpu, dtype, block_n)),
      **_ring(plgpu, stages),
      out_smem=plgpu.SMEM((2, 2, block_k, epi_n), out_dtype,
                          transforms=mgpu._transforms(plgpu, out_dtype, epi_n)))

  @functools.partial(pl.run_scoped, **scratch, collective_axes="wg")
  def _scope(a_smem, b_smem, full, consumed, out_smem):
    wg = jax.lax.axis_index("wg")
    ring = (full, consumed, stages)

    # Items (group, N block, K block), the K block fastest and the group slowest: the
    # CTAs resident together read the same group's rows, from L2.
    def item(pid):
      e = pid // (n_blocks * k_blocks)
      steps = steps_gmem[e]
      return (e, (pid // k_blocks) % n_blocks, pid % k_blocks), steps > 0, steps
    walk = functools.partial(_walk, plgpu, num_groups * n_blocks * k_blocks, item)

    @pl.when(wg == 2)
    def _memory():
      plgpu.set_max_registers(_MEMORY_REGISTERS, action="decrease")

      def body(info, used, steps, owner, first_step):
        e, j, i = info
        first_row = start_gmem[e] * steps_per_tile * rows

        def copies(kk):
          step_rows = pl.ds(first_row + kk * rows, rows)
          return ((lhs_gmem.at[step_rows, pl.ds(i * block_k, block_k)], a_smem),
                  (rhs_gmem.at[step_rows, pl.ds(j * block_n, block_n)], b_smem))
        _fill(plgpu, ring, owner, first_step, steps, copies)  # no steps: no copies
      walk(body)

    @pl.when(wg < 2)
    def _compute():
      plgpu.set_max_registers(_COMPUTE_REGISTERS, action="increase")

      def body(info, used, steps, owner, first_step):
        e, j, i = info
        out_tile = out_gmem.at[e, pl.ds(i * block_k, block_k), pl.ds(j * block_n, block_n)]
        store = functools.partial(mgpu._store, plgpu, out_smem.at[wg], out_tile, block_n, epi_n)
        mine = owner == wg

        @pl.when(jnp.logical_and(mine, used))
        def _():
          def mma(slot, accs):
            # out block [BK, BN] += lhs rows [64, BK].T @ rhs rows [64, BN]
            plgpu.wgmma(accs[0], a_smem.at[slot].transpose((1, 0)), b_smem.at[slot])

          def run(acc):
            (acc,) = _consume(plgpu, ring, wg, first_step, steps, mma, (acc,), 1)
            value = acc[...].astype(out_dtype)
            store(lambda cs: value[:, cs])
          pl.run_scoped(run, plgpu.ACC((block_k, block_n), jnp.float32))

        @pl.when(jnp.logical_and(mine, jnp.logical_not(used)))
        def _():
          store(lambda cs: jnp.zeros((block_k, epi_n), out_dtype))
      walk(body)

  plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def _params(name, lhs, tile_group, n, config, *, transpose_rhs, out_bytes, glu):
  """`_kernel`'s static parameters (errors name `name`): the cooperative kernel's, with
  the epilogue staging a whole tile's rows."""
  params = mgpu._gmm_params(name, lhs, tile_group, n, config, transpose_rhs=transpose_rhs)
  del params["in_flight"]
  params["bands"] = config.row_band == "expert"
  if glu is None:
    ring = (params["stages"] * (params["tile_rows"] + config.block_n) * config.block_k
            * lhs.dtype.itemsize)
    params["epi_n"] = mgpu.epilogue_n(ring, params["tile_rows"], out_bytes)
  else:
    params.update(epi_n=mgpu._GLU_N, glu=glu)
  return params


def _bands(tile_group, params) -> tuple:
  """The kernel's band operands: `group_bands`' two arrays under row_band="expert"."""
  return group_bands(tile_group, MAX_GROUP_BAND) if params["bands"] else ()


@functools.partial(jax.jit, static_argnames=("transpose_rhs", "out_dtype", "config", "num_sms",
                                             "zero_unused"))
def gmm(lhs, rhs, tile_group, *, transpose_rhs: bool, out_dtype, config: MatmulConfig,
        num_sms: int, zero_unused: bool = True):
  """`grouped_matmul_mgpu.gmm` with the ping-pong schedule; inputs are validated by the
  API (`config.mma_in_flight` does not apply: one wgmma group is always in flight)."""
  plgpu = _compat.mosaic_gpu()
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  params = _params("gmm", lhs, tile_group, n, config, transpose_rhs=transpose_rhs,
                   out_bytes=jnp.dtype(out_dtype).itemsize, glu=None)
  params["zero_unused"] = zero_unused

  def moe_gmm_pingpong(*refs):  # the kernel's name in jaxprs and profiles (GMM_NAME)
    _kernel(*refs, **params)
  out_type = jax.ShapeDtypeStruct((lhs.shape[0], n), out_dtype)
  return mgpu._launch(plgpu, moe_gmm_pingpong, out_type, num_sms)(
      tile_group, lhs, rhs, *_bands(tile_group, params))


@functools.partial(jax.jit, static_argnames=("act", "config", "num_sms", "return_h",
                                             "zero_unused"))
def gmm_glu(lhs, rhs, bias, tile_group, tile_fill, *, act: tuple, config: MatmulConfig,
            num_sms: int, return_h: bool = False, zero_unused: bool = True):
  """`grouped_matmul_mgpu.gmm_glu` with the ping-pong schedule; inputs are validated by
  the API."""
  plgpu = _compat.mosaic_gpu()
  num_rows, n = lhs.shape[0], rhs.shape[2]
  params = _params("gmm_glu", lhs, tile_group, n, config, transpose_rhs=False,
                   out_bytes=lhs.dtype.itemsize, glu=act)
  params.update(write_h=return_h, zero_unused=zero_unused)
  mgpu.check_glu_smem(config, params["tile_rows"], params["tile_rows"], lhs.dtype.itemsize)

  def moe_gmm_glu_pingpong(*refs):  # the kernel's name in jaxprs and profiles (GMM_GLU_NAME)
    _kernel(*refs, **params)
  out_type = mgpu.glu_out_type(num_rows, n, lhs.dtype, return_h)
  return mgpu._launch(plgpu, moe_gmm_glu_pingpong, out_type, num_sms)(
      tile_group, lhs, rhs, *_bands(tile_group, params),
      *mgpu.glu_operands(bias, tile_group, tile_fill, n, params))


@functools.partial(jax.jit, static_argnames=("num_groups", "out_dtype", "config", "num_sms"))
def tgmm(lhs, rhs, tile_group, tile_fill=None, *, num_groups: int, out_dtype,
         config: MatmulConfig, num_sms: int):
  """`grouped_matmul_mgpu.tgmm` with the ping-pong schedule (block_k * block_n at most
  `PINGPONG_MAX_ACCUMULATOR`, block_n any multiple of 64); inputs are validated by the
  API."""
  plgpu = _compat.mosaic_gpu()
  start, steps, params = mgpu.tgmm_params(lhs, rhs, tile_group, tile_fill, num_groups=num_groups,
                                          out_dtype=out_dtype, config=config)

  def moe_tgmm_pingpong(*refs):  # the kernel's name in jaxprs and profiles (TGMM_NAME)
    _tgmm_kernel(*refs, **params)
  out_type = jax.ShapeDtypeStruct((num_groups, lhs.shape[1], rhs.shape[1]), out_dtype)
  return mgpu._launch(plgpu, moe_tgmm_pingpong, out_type, num_sms)(start, steps, lhs, rhs)
