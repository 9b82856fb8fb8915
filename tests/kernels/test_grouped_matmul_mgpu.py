"""The Mosaic GPU gmm and tgmm (backend="mosaic"): values on a Hopper GPU against float64
NumPy; on any machine, their config rules, their errors and that they lower for CUDA.

Mosaic GPU has no interpreter, so the value tests are `gpu`-marked only.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat
from moe_jax.kernels import MatmulConfig, default_matmul_config, gmm, tgmm
from moe_jax.kernels.api import mosaic_gmm_kernels
from moe_jax.kernels import grouped_matmul_mgpu as mgpu

from ._support import bits, normal
from .test_grouped_matmul import _assert_close, _np_gmm, _np_tgmm

# (E, K, N, tile_group, block_n, row_band); TM = 128. Empty tiles at the end, an expert
# with no tile, a 192-column block (N = 2880-like), a 64-row warpgroup split (192) and
# a column split (128, 256), K of one and of many ring cycles, bands short and long,
# and N = 320 with 256-column blocks (the last one runs past the edge).
CASES = [
    (3, 256, 384, [0, 0, 2, -1], 192, 2),
    (2, 128, 256, [1], 256, None),
    (4, 576, 512, [0, 1, 1, 3, 3, 3, -1, -1], 128, 3),
    (2, 64, 64, [0, 1, -1], 64, 1),
    (2, 192, 320, [0, 1, 1], 256, 2),
]
# tgmm: (E, K, N, tile_group, block_k, block_n): a group with no tile (zeros), K and N
# past the block edges (K = 192 with 128-row blocks, N = 320 with 256 columns), and the
# bf16 layer test's up-projection gradient (K = N = 128 in one block each).
TGMM_CASES = [
    (4, 192, 320, [0, 0, 2, 3, -1], 128, 256),
    (2, 128, 256, [0, 1, 1, 1], 64, 128),
    (4, 128, 128, [0, 1, 1, 2, 3, -1, -1], 128, 128),
]
# The ping-pong tgmm's blocks of the same cases (a warpgroup's whole accumulator, at
# most 128 * 192): 192 rows of K, 192 columns past N = 256's edge, and one block.
TGMM_PINGPONG_BLOCKS = [(192, 128), (128, 192), (128, 128)]
# (mma_in_flight, schedule): each off its default once.
TGMM_KNOBS = [(0, "cooperative"), (1, "cooperative"), (0, "pingpong")]


def _tgmm_config(case_index, in_flight, schedule, stages=3):
  block_k, block_n = (TGMM_CASES[case_index][4:] if schedule == "cooperative"
                      else TGMM_PINGPONG_BLOCKS[case_index])
  return MatmulConfig(block_n=block_n, block_k=block_k, num_stages=stages, backend="mosaic",
                      mma_in_flight=in_flight, schedule=schedule)


def _operands(case, transpose_rhs, seed):
  e, k, n, groups, _, _ = case
  lhs = normal(seed, (len(groups) * 128, k), jnp.bfloat16)
  rhs = normal(seed + 1, (e, n, k) if transpose_rhs else (e, k, n), jnp.bfloat16)
  return lhs, rhs, jnp.asarray(groups, jnp.int32)


def _config(case, stages=4, in_flight=0, schedule="cooperative"):
  # A ping-pong warpgroup holds a whole [128, BN] accumulator: BN <= 192.
  block_n = case[4] if schedule == "cooperative" or case[4] <= 192 else 128
  return MatmulConfig(block_n=block_n, block_k=64, num_stages=stages, row_band=case[5],
                      backend="mosaic", mma_in_flight=in_flight, schedule=schedule)


# (mma_in_flight, schedule): each off its default once.
GMM_KNOBS = [(0, "cooperative"), (1, "cooperative"), (0, "pingpong")]


@pytest.mark.gpu
@pytest.mark.parametrize("in_flight, schedule", GMM_KNOBS)
@pytest.mark.parametrize("out_dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("transpose_rhs", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_mosaic_gmm_matches_float64(case, transpose_rhs, out_dtype, in_flight, schedule):
  lhs, rhs, groups = _operands(case, transpose_rhs, seed=20)
  lhs = lhs.at[-128:].set(jnp.nan) if case[3][-1] < 0 else lhs  # never read
  config = _config(case, in_flight=in_flight, schedule=schedule)
  got = jax.jit(lambda a, b, t: gmm(a, b, t, transpose_rhs=transpose_rhs, out_dtype=out_dtype,
                                    implementation="pallas", config=config))(lhs, rhs, groups)
  assert got.dtype == out_dtype
  if case[3][-1] < 0:
    assert np.all(np.asarray(got[-128:]) == 0)
    lhs = lhs.at[-128:].set(0)
  _assert_close(got, _np_gmm, out_dtype, lhs, rhs, np.asarray(groups), transpose_rhs)


@pytest.mark.gpu
@pytest.mark.parametrize("in_flight, schedule", TGMM_KNOBS)
@pytest.mark.parametrize("case_index", range(len(TGMM_CASES)))
def test_mosaic_tgmm_matches_float64(case_index, in_flight, schedule):
  e, k, n, groups, _, _ = TGMM_CASES[case_index]
  lhs = normal(40, (len(groups) * 128, k), jnp.bfloat16)
  rhs = normal(41, (len(groups) * 128, n), jnp.bfloat16)
  config = _tgmm_config(case_index, in_flight, schedule)
  got = jax.jit(lambda a, b, t: tgmm(a, b, t, num_groups=e, out_dtype=jnp.float32,
                                     implementation="pallas", config=config))(
                                         lhs, rhs, jnp.asarray(groups, jnp.int32))
  assert got.shape == (e, k, n)
  _assert_close(got, _np_tgmm, jnp.float32, lhs, rhs, np.asarray(groups), e)


@pytest.mark.gpu
@pytest.mark.parametrize("in_flight, schedule", TGMM_KNOBS)
def test_mosaic_tgmm_stops_at_the_last_filled_step(in_flight, schedule):
  """Each group's loop ends with the 64-row step holding its last filled row: rows of
  later steps hold garbage (3.0) that would otherwise add in. Under the ping-pong
  schedule the ring also runs on across items of 4, 0, 2 and 1 steps, in bf16."""
  e, groups = 4, [0, 0, 2, 3, -1]
  fill = np.array([128, 70, 128, 10, 0], np.int32)  # group 0: 198 rows, 4 steps; 3: 1 step
  lhs = normal(61, (len(groups) * 128, 192), jnp.bfloat16)
  rhs = normal(62, (len(groups) * 128, 256), jnp.bfloat16)
  row = np.arange(len(groups) * 128)
  skipped = (row >= 3 * 128 + 64)  # group 3's second step and the unused tile
  lhs = jnp.where(jnp.asarray(skipped)[:, None], jnp.bfloat16(3.0), lhs)
  block_k, block_n = (128, 256) if schedule == "cooperative" else (64, 128)
  config = MatmulConfig(block_n=block_n, block_k=block_k, num_stages=3, backend="mosaic",
                        mma_in_flight=in_flight, schedule=schedule)
  out_dtype = jnp.float32 if schedule == "cooperative" else jnp.bfloat16
  got = jax.jit(lambda a, b, t, f: tgmm(a, b, t, num_groups=e, tile_fill=f, out_dtype=out_dtype,
                                        implementation="pallas", config=config))(
                                            lhs, rhs, jnp.asarray(groups, jnp.int32),
                                            jnp.asarray(fill))
  want_lhs = jnp.where(jnp.asarray(~skipped)[:, None], lhs, 0)
  _assert_close(got, _np_tgmm, out_dtype, want_lhs, rhs, np.asarray(groups), e)


@pytest.mark.gpu
def test_products_left_in_flight_change_no_bit():
  """mma_in_flight=1 only overlaps the steps' wgmma; each accumulator sums in the same
  order, so gmm and tgmm give the same bits as with 0 (a slot released too early would
  not), on a K of many ring cycles."""
  case = (4, 2880, 384, [0, 1, 1, 3, 3, 3, -1], 192, 3)
  lhs, rhs, groups = _operands(case, False, seed=50)
  run = lambda c: jax.jit(lambda a, b, t: gmm(a, b, t, implementation="pallas", config=c))(
      lhs, rhs, groups)
  np.testing.assert_array_equal(np.asarray(run(_config(case, 4, 0)), np.float32),
                                np.asarray(run(_config(case, 4, 1)), np.float32))
  g = normal(51, (lhs.shape[0], 256), jnp.bfloat16)
  run_t = lambda f: jax.jit(lambda a, b, t: tgmm(
      a, b, t, num_groups=4, implementation="pallas",
      config=MatmulConfig(block_n=256, block_k=128, num_stages=3, backend="mosaic",
                          mma_in_flight=f)))(lhs, g, groups)
  np.testing.assert_array_equal(np.asarray(run_t(0), np.float32),
                                np.asarray(run_t(1), np.float32))
  # The ping-pong tgmm sums each block in the same order too.
  pingpong = jax.jit(lambda a, b, t: tgmm(
      a, b, t, num_groups=4, implementation="pallas",
      config=MatmulConfig(block_n=128, block_k=192, num_stages=4, backend="mosaic",
                          schedule="pingpong")))(lhs, g, groups)
  np.testing.assert_array_equal(np.asarray(pingpong, np.float32), np.asarray(run_t(0), np.float32))


@pytest.mark.gpu
def test_default_config_on_hopper_is_mosaic_and_matches_triton():
  """The layer's shapes pick the Mosaic kernel on an H100; same bits as Triton's."""
  assert _compat.is_hopper(), "the GPU tests of this project run on an H100/H200"
  config = default_matmul_config(128, 2880, 5760, jnp.bfloat16, tiles_per_expert=4)
  assert (config.backend, config.block_n, config.row_band, config.schedule) == (
      "mosaic", 192, "expert", "pingpong")
  assert default_matmul_config(128, 4096, 28672, jnp.bfloat16).block_n == 256
  case = (3, 2880, 576, [0, 1, 1, 2, -1], 192, 4)
  lhs, rhs, groups = _operands(case, False, seed=30)
  got = gmm(lhs, rhs, groups, implementation="pallas")
  triton = gmm(lhs, rhs, groups, implementation="pallas",
               config=MatmulConfig(block_n=64, block_k=64, num_warps=4, num_stages=3))
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(triton, np.float32))
  _assert_close(got, _np_gmm, jnp.bfloat16, lhs, rhs, np.asarray(groups))


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", ["cooperative", "pingpong"])
@pytest.mark.parametrize("transpose_rhs", [False, True])
def test_mosaic_gmm_without_zero_unused_keeps_the_used_rows(transpose_rhs, schedule):
  """zero_unused=False only stops the unused tiles' zero stores: every used row is the
  same, bit for bit, as with them (the unused rows hold whatever the buffer held)."""
  case = CASES[0]  # its last tile is unused
  lhs, rhs, groups = _operands(case, transpose_rhs, seed=25)
  config = _config(case, schedule=schedule)
  run = lambda zero: jax.jit(lambda a, b, t: gmm(  # noqa: E731
      a, b, t, transpose_rhs=transpose_rhs, implementation="pallas", config=config,
      zero_unused=zero))(lhs, rhs, groups)
  used = np.repeat(np.asarray(groups) >= 0, 128)
  np.testing.assert_array_equal(bits(run(False))[used], bits(run(True))[used])


@pytest.mark.parametrize("zero_unused", [True, False])
@pytest.mark.parametrize("in_flight, schedule", GMM_KNOBS)
@pytest.mark.parametrize("transpose_rhs", [False, True])
@pytest.mark.parametrize("case", [CASES[0], CASES[1]])
def test_mosaic_gmm_lowers_for_cuda(case, transpose_rhs, in_flight, schedule, zero_unused):
  """Tracing and Mosaic GPU lowering run on any machine: API drift fails here in CI."""
  lhs, rhs, groups = _operands(case, transpose_rhs, seed=0)
  config = _config(case, in_flight=in_flight, schedule=schedule)
  fn = lambda a, b, t: mosaic_gmm_kernels(config).gmm(
      a, b, t, transpose_rhs=transpose_rhs, out_dtype=jnp.bfloat16, config=config, num_sms=132,
      zero_unused=zero_unused)
  text = _compat.lower_for_cuda(fn, lhs, rhs, groups)
  assert "mosaic_gpu" in text


@pytest.mark.gpu
@pytest.mark.parametrize("transpose_rhs", [False, True])
@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_mosaic_pingpong_expert_bands_give_the_same_bits(case, transpose_rhs):
  """row_band="expert" changes which CTA computes a tile, not how: the same bits as the
  case's fixed band, and float64's values."""
  lhs, rhs, groups = _operands(case, transpose_rhs, seed=26)
  fixed = _config(case, schedule="pingpong")
  run = lambda config: jax.jit(lambda a, b, t: gmm(  # noqa: E731
      a, b, t, transpose_rhs=transpose_rhs, implementation="pallas", config=config))(
          lhs, rhs, groups)
  got = run(dataclasses.replace(fixed, row_band="expert"))
  np.testing.assert_array_equal(bits(got), bits(run(fixed)))
  _assert_close(got, _np_gmm, jnp.bfloat16, lhs, rhs, np.asarray(groups), transpose_rhs)


@pytest.mark.parametrize("transpose_rhs", [False, True])
def test_mosaic_pingpong_expert_bands_lower_for_cuda(transpose_rhs):
  """The banded launch order's operands reach the kernel and lower on any machine."""
  case = CASES[2]
  lhs, rhs, groups = _operands(case, transpose_rhs, seed=0)
  config = dataclasses.replace(_config(case, schedule="pingpong"), row_band="expert")
  fn = lambda a, b, t: mosaic_gmm_kernels(config).gmm(
      a, b, t, transpose_rhs=transpose_rhs, out_dtype=jnp.bfloat16, config=config, num_sms=132)
  assert "mosaic_gpu" in _compat.lower_for_cuda(fn, lhs, rhs, groups)


@pytest.mark.parametrize("in_flight, schedule", TGMM_KNOBS)
def test_mosaic_tgmm_lowers_for_cuda(in_flight, schedule):
  e, k, n, groups, _, _ = TGMM_CASES[0]
  config = _tgmm_config(0, in_flight, schedule)
  fn = lambda a, b, t, f: mosaic_gmm_kernels(config).tgmm(
      a, b, t, f, num_groups=e, out_dtype=jnp.bfloat16, config=config, num_sms=132)
  rows = len(groups) * 128
  text = _compat.lower_for_cuda(fn, jnp.zeros((rows, k), jnp.bfloat16),
                                jnp.zeros((rows, n), jnp.bfloat16), jnp.asarray(groups, jnp.int32),
                                jnp.full(len(groups), 70, jnp.int32))
  assert "mosaic_gpu" in text


def test_tgmm_group_steps_end_at_the_last_filled_row():
  """Each group's loop: first tile, and 64-row steps up to the last filled row of its
  last tile, against the layout written out in NumPy; a partly filled middle tile (not
  made by the dispatch, but allowed) does not cut the loop short."""
  groups = np.array([0, 0, 2, 3, 3, 3, -1, -1], np.int32)
  fill = np.array([128, 70, 128, 128, 40, 128, 0, 0], np.int32)
  start, steps = mgpu.group_steps(jnp.asarray(groups), jnp.asarray(fill), 5, 128)
  rows = [0] * 5
  for t, g in enumerate(groups):
    if g >= 0:  # the group's rows up to this tile's fill, counting its full tiles before
      rows[g] = (t - list(groups).index(g)) * 128 + fill[t]
  assert np.asarray(start).tolist() == [0, 2, 2, 3, 6]
  assert np.asarray(steps).tolist() == [-(-r // 64) for r in rows]  # [4, 0, 2, 6, 0]
  _, full = mgpu.group_steps(jnp.asarray(groups), None, 5, 128)
  assert np.asarray(full).tolist() == [4, 0, 2, 6, 0]


def test_epilogue_narrows_when_shared_memory_is_short():
  # gmm at BN 256, 4 stages: ring 4 * (128 + 256) * 64 * 2 B = 192 KB; 64-column staging
  # for two warpgroups of [128, 64] (double-buffered) is 64 KB more: past 227 KB
  assert mgpu.epilogue_n(4 * (128 + 256) * 64 * 2, 128, 2) == 32
  assert mgpu.epilogue_n(3 * (128 + 256) * 64 * 2, 128, 2) == 64
  assert mgpu.epilogue_n(4 * (128 + 192) * 64 * 2, 64, 2) == 64


def test_mosaic_config_rules_and_errors():
  assert MatmulConfig(block_n=192, backend="mosaic").block_n == 192
  with pytest.raises(ValueError, match=r"backend must be one of \('triton', 'mosaic'\), got 'cuda'"):
    MatmulConfig(backend="cuda")
  with pytest.raises(ValueError, match=r"block_n must be a multiple of 64 <= 256 for backend="
                                       r"'mosaic', got 96"):
    MatmulConfig(block_n=96, backend="mosaic")
  with pytest.raises(ValueError, match=r"block_n must be a power of two >= 16, got 192"):
    MatmulConfig(block_n=192)
  with pytest.raises(ValueError, match=r"mma_in_flight must be 0 or 1, got 2"):
    MatmulConfig(backend="mosaic", mma_in_flight=2)
  with pytest.raises(ValueError, match=r"mma_in_flight=1 must be below num_stages, got "
                                       r"num_stages=1"):
    MatmulConfig(backend="mosaic", mma_in_flight=1, num_stages=1)
  with pytest.raises(ValueError, match=r"schedule must be one of \('cooperative', 'pingpong'\),"
                                       r" got 'serial'"):
    MatmulConfig(backend="mosaic", schedule="serial")
  with pytest.raises(ValueError, match=r"schedule='pingpong' needs backend='mosaic', got "
                                       r"backend='triton'"):
    MatmulConfig(schedule="pingpong")
  with pytest.raises(ValueError, match=r"block_n must be <= 192 for schedule='pingpong' .*"
                                       r"got 256"):
    MatmulConfig(block_n=256, backend="mosaic", schedule="pingpong")
  with pytest.raises(ValueError, match=r"mma_in_flight must be 0 for schedule='pingpong' .*"
                                       r"got 1"):
    MatmulConfig(backend="mosaic", schedule="pingpong", mma_in_flight=1)
  lhs, rhs, groups = _operands(CASES[0], False, seed=0)
  with pytest.raises(ValueError, match=r"no interpreter: expected interpret=False .* got "
                                       r"interpret=True"):
    gmm(lhs, rhs, groups, implementation="pallas", interpret=True, config=_config(CASES[0]))
  with pytest.raises(ValueError, match=r"needs 16-bit operands, got float32"):
    gmm(lhs.astype(jnp.float32), rhs, groups, implementation="pallas", interpret=False,
        config=_config(CASES[0]))
  with pytest.raises(ValueError, match=r"the Mosaic GPU gmm needs N=200 a multiple of 64"):
    gmm(lhs, rhs[:, :, :200], groups, implementation="pallas", interpret=False,
        config=MatmulConfig(block_n=256, backend="mosaic"))
  if not _compat.is_hopper():
    with pytest.raises(ValueError, match=r"the Mosaic GPU gmm needs a Hopper \(sm_90\) GPU, got"):
      gmm(lhs, rhs, groups, implementation="pallas", interpret=False, config=_config(CASES[0]))
  with pytest.raises(ValueError, match=r"the Mosaic GPU tgmm needs block_n=256 <= N=128"):
    tgmm(lhs, lhs[:, :128], groups, num_groups=3, implementation="pallas", interpret=False,
         config=MatmulConfig(block_n=256, block_k=128, backend="mosaic"))
  with pytest.raises(ValueError, match=r"the Mosaic GPU gmm needs block_k=128 <= K=64"):
    gmm(lhs[:, :64], rhs[:, :64], groups, implementation="pallas", interpret=False,
        config=MatmulConfig(block_n=64, block_k=128, backend="mosaic"))
  with pytest.raises(ValueError, match=r"the Mosaic GPU tgmm needs block_n a multiple of 128"
                                       r" \(two warpgroup halves\), got 192"):
    tgmm(lhs, lhs, groups, num_groups=3, implementation="pallas", interpret=False,
         config=_config(CASES[0]))
  with pytest.raises(ValueError, match=r"the Mosaic GPU tgmm needs block_k \* block_n <= 24576 "
                                       r"for schedule='pingpong' .*, got 192 \* 192 = 36864"):
    tgmm(lhs, lhs, groups, num_groups=3, implementation="pallas", interpret=False,
         config=MatmulConfig(block_n=192, block_k=192, backend="mosaic", schedule="pingpong"))
  with pytest.raises(ValueError, match=r"the Mosaic GPU tgmm needs its TMA ring and epilogue "
                                       r"staging in 230400 bytes of shared memory, got 262144 "
                                       r"with num_stages=4, block_k=192, block_n=128 and "
                                       r"4-byte outputs"):
    mgpu.tgmm_params(jnp.zeros((512, 2880), jnp.bfloat16), jnp.zeros((512, 5760), jnp.bfloat16),
                     jnp.zeros(4, jnp.int32), None, num_groups=2, out_dtype=jnp.float32,
                     config=MatmulConfig(block_n=128, block_k=192, num_stages=4,
                                         backend="mosaic", schedule="pingpong"))


@pytest.mark.parametrize("hopper", [False, True])
def test_default_config_choice(monkeypatch, hopper):
  """Mosaic only on an sm_90 GPU, not interpreting, for 16-bit TM=128 and 64-multiple K, N;
  the widest of 256/192/128 that divides N."""
  monkeypatch.setattr(_compat, "is_hopper", lambda: hopper)
  backend = "mosaic" if hopper else "triton"
  assert default_matmul_config(128, 2880, 5760, jnp.bfloat16).backend == backend
  assert default_matmul_config(128, 2880, 5760, jnp.bfloat16, interpret=True).backend == "triton"
  assert default_matmul_config(128, 2880, 5760, jnp.float32).backend == "triton"
  assert default_matmul_config(64, 2880, 5760, jnp.bfloat16).backend == "triton"
  assert default_matmul_config(128, 2880, 200, jnp.bfloat16).backend == "triton"
  assert default_matmul_config(128, 2880, 5760, jnp.bfloat16, transposed=True).backend == backend
  assert default_matmul_config(16, 2880, 5760, jnp.bfloat16, transposed=True).backend == "triton"
  if hopper:
    blocks = [default_matmul_config(128, 4096, n, jnp.bfloat16).block_n
              for n in (28672, 2880, 5760, 640)]
    assert blocks == [256, 192, 192, 128]
    # Ping-pong where the block is 192 (gmm and gmm_glu alike), with a 4-deep ring.
    schedules = [default_matmul_config(128, 4096, n, jnp.bfloat16).schedule
                 for n in (28672, 2880, 640)]
    assert schedules == ["cooperative", "pingpong", "cooperative"]
    pingpong = default_matmul_config(128, 2880, 5760, jnp.bfloat16)
    assert (pingpong.block_n, pingpong.num_stages) == (192, 4)
    assert default_matmul_config(128, 4096, 320, jnp.bfloat16).block_n == 64
    small = default_matmul_config(128, 64, 128, jnp.bfloat16, transposed=True)
    assert (small.block_k, small.block_n) == (64, 128)
    # tgmm: ping-pong [128, 192] blocks and a 4-deep ring, narrower where K or N is.
    weights = default_matmul_config(128, 2880, 5760, jnp.bfloat16, transposed=True)
    assert (weights.schedule, weights.block_k, weights.block_n, weights.num_stages) == (
        "pingpong", 128, 192, 4)
    assert default_matmul_config(128, 2880, 64, jnp.bfloat16, transposed=True).block_n == 64
