"""gmm / tgmm: both implementations against float64 NumPy, and the API's errors."""
import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.kernels import MatmulConfig, api, default_matmul_config, gmm, tgmm
from moe_jax.kernels.grouped_matmul import banded_tile_and_column, group_bands, tile_and_column

from ._support import Twin, normal

HIGHEST = jax.lax.Precision.HIGHEST
# Error bound against float64: |got - want| <= (K + 1) * 2^-24 * (|a| @ |b|) for the f32
# products and the f32 sum of K of them in any order (the classic gamma_K bound), plus,
# by output dtype, one final rounding.
F32_UNIT = 2.0**-24
OUTPUT_ROUNDING = {
    jnp.float32: (0.0, "f32 output: the accumulator is returned as is"),
    jnp.bfloat16: (2.0**-8, "bf16 output: one rounding of the f32 sum (2^-8 relative)"),
}
# (E, K, N, TM, tile_group): K and N off every block, an expert with no tile, unused
# tiles at the end, a single tile, and the GPT-OSS width 2880 (no power-of-two block
# divides it).
CASES = [
    (3, 40, 72, 16, [0, 0, 2, 2, 2, -1]),
    (4, 64, 128, 32, [1, 1, 3, -1, -1]),
    (1, 24, 20, 16, [0]),
    (2, 2880, 48, 16, [0, 1, 1]),
    (5, 96, 200, 16, [0, 1, 2, 3, 4, 4, 4, -1]),
]


def _np_gmm(lhs, rhs, tile_group, transpose_rhs=False, absolute=False):
  lhs, rhs = np.asarray(lhs, np.float64), np.asarray(rhs, np.float64)
  if absolute:
    lhs, rhs = np.abs(lhs), np.abs(rhs)
  if transpose_rhs:
    rhs = np.swapaxes(rhs, 1, 2)
  tm = lhs.shape[0] // len(tile_group)
  out = np.zeros((lhs.shape[0], rhs.shape[2]))
  for t, g in enumerate(tile_group):
    if g >= 0:
      out[t * tm:(t + 1) * tm] = lhs[t * tm:(t + 1) * tm] @ rhs[g]
  return out


def _np_tgmm(lhs, rhs, tile_group, num_groups, absolute=False):
  lhs, rhs = np.asarray(lhs, np.float64), np.asarray(rhs, np.float64)
  if absolute:
    lhs, rhs = np.abs(lhs), np.abs(rhs)
  tm = lhs.shape[0] // len(tile_group)
  out = np.zeros((num_groups, lhs.shape[1], rhs.shape[1]))
  for t, g in enumerate(tile_group):
    if g >= 0:
      out[g] += lhs[t * tm:(t + 1) * tm].T @ rhs[t * tm:(t + 1) * tm]
  return out


def _operands(case, dtype, transpose_rhs=False, seed=0):
  e, k, n, tm, groups = case
  lhs = normal(seed, (len(groups) * tm, k), dtype)
  rhs = normal(seed + 1, (e, n, k) if transpose_rhs else (e, k, n), dtype)
  return lhs, rhs, jnp.asarray(groups, jnp.int32)


def _assert_close(got, oracle, dtype, *args, **kwargs):
  """got against oracle(*args) in float64, within the bound above."""
  want = oracle(*args, **kwargs)
  magnitude = oracle(*args, **kwargs, absolute=True)
  num_terms = args[0].shape[1] if oracle is _np_gmm else args[0].shape[0]
  bound = (num_terms + 1) * F32_UNIT * magnitude + OUTPUT_ROUNDING[dtype][0] * np.abs(want)
  err = np.abs(np.asarray(got, np.float64) - want)
  assert np.all(err <= bound + 1e-30), f"max excess {np.max(err - bound)}"


class GroupedMatmul(Twin):

  @pytest.mark.parametrize("transpose_rhs", [False, True])
  @pytest.mark.parametrize("case", CASES)
  def test_gmm_float32(self, case, transpose_rhs):
    lhs, rhs, groups = _operands(case, jnp.float32, transpose_rhs)
    got = self.pallas(gmm, lhs, rhs, groups, transpose_rhs=transpose_rhs, precision=HIGHEST)
    assert got.shape == (lhs.shape[0], rhs.shape[1] if transpose_rhs else rhs.shape[2])
    _assert_close(got, _np_gmm, jnp.float32, lhs, rhs, np.asarray(groups), transpose_rhs)

  @pytest.mark.parametrize("case", CASES[:2])
  def test_gmm_bfloat16(self, case):
    lhs, rhs, groups = _operands(case, jnp.bfloat16, seed=3)
    got = self.pallas(gmm, lhs, rhs, groups)
    assert got.dtype == jnp.bfloat16
    _assert_close(got, _np_gmm, jnp.bfloat16, lhs, rhs, np.asarray(groups))

  def test_gmm_unused_tiles_are_zero_even_over_nan(self):
    lhs, rhs, groups = _operands(CASES[0], jnp.float32)
    lhs = lhs.at[-16:].set(jnp.nan)  # the last tile has no group
    got = np.asarray(self.pallas(gmm, lhs, rhs, groups, precision=HIGHEST))
    assert np.all(got[-16:] == 0)

  @pytest.mark.parametrize("case", CASES)
  def test_tgmm_float32(self, case):
    e, _, n, _, groups = case
    lhs, _, tile_group = _operands(case, jnp.float32, seed=5)
    rhs = normal(7, (lhs.shape[0], n), jnp.float32)
    got = self.pallas(tgmm, lhs, rhs, tile_group, num_groups=e, precision=HIGHEST)
    assert got.shape == (e, lhs.shape[1], n)
    _assert_close(got, _np_tgmm, jnp.float32, lhs, rhs, groups, e)

  def test_tgmm_bfloat16_small_blocks(self):
    e, _, n, _, groups = CASES[4]
    lhs, _, tile_group = _operands(CASES[4], jnp.bfloat16, seed=8)
    rhs = normal(9, (lhs.shape[0], n), jnp.bfloat16)
    config = MatmulConfig(block_n=32, block_k=16, num_warps=2, num_stages=1)
    got = self.pallas(tgmm, lhs, rhs, tile_group, num_groups=e, config=config)
    _assert_close(got, _np_tgmm, jnp.bfloat16, lhs, rhs, groups, e)

  # 8 row tiles x 4 column blocks: every tile and column once, a short last band (3).
  @pytest.mark.parametrize("row_band", [None, 1, 3, 8, 20])
  def test_gmm_launch_orders(self, row_band):
    lhs, rhs, groups = _operands(CASES[4], jnp.float32, seed=10)
    config = MatmulConfig(block_n=64, block_k=16, num_warps=4, num_stages=2, row_band=row_band)
    got = self.pallas(gmm, lhs, rhs, groups, config=config, precision=HIGHEST)
    _assert_close(got, _np_gmm, jnp.float32, lhs, rhs, np.asarray(groups))


@pytest.mark.gpu
class TestGroupedMatmulGpu(GroupedMatmul):
  INTERPRET = False


class TestGroupedMatmulInterpret(GroupedMatmul):
  INTERPRET = True


@pytest.mark.parametrize("case", CASES)
def test_xla_matches_float64(case):
  e, _, n, _, groups = case
  lhs, rhs, tile_group = _operands(case, jnp.float32, seed=11)
  got = gmm(lhs, rhs, tile_group, implementation="xla", precision=HIGHEST)
  _assert_close(got, _np_gmm, jnp.float32, lhs, rhs, groups)
  g = normal(12, (lhs.shape[0], n), jnp.float32)
  got = tgmm(lhs, g, tile_group, num_groups=e, implementation="xla", precision=HIGHEST)
  _assert_close(got, _np_tgmm, jnp.float32, lhs, g, groups, e)


@pytest.mark.parametrize("implementation,interpret", [("xla", None), ("pallas", True)])
def test_tgmm_tile_fill_keeps_the_product(implementation, interpret):
  """With rows past each tile's fill zero in lhs (the contract), tgmm given tile_fill
  equals float64 of the plain product; xla and Triton sum every row."""
  case = (3, 40, 72, 16, [0, 0, 2, 2, 2, -1])
  e, _, n, tm, groups = case
  fill = np.array([16, 5, 16, 16, 9, 0], np.int32)
  rows = (np.arange(tm)[None, :] < fill[:, None]).reshape(-1)
  lhs, _, tile_group = _operands(case, jnp.float32, seed=13)
  lhs = jnp.where(jnp.asarray(rows)[:, None], lhs, 0.0)
  kw = dict(tile_fill=jnp.asarray(fill), implementation=implementation, precision=HIGHEST)
  if interpret:
    kw["interpret"] = True
  g = normal(14, (lhs.shape[0], n), jnp.float32)
  got = tgmm(lhs, g, tile_group, num_groups=e, **kw)
  _assert_close(got, _np_tgmm, jnp.float32, lhs, g, groups, e)


@pytest.mark.parametrize("num_tiles,num_cols,band", [(8, 4, 3), (5, 7, 1), (6, 2, 6), (7, 3, 2)])
def test_launch_position_is_the_banded_order(num_tiles, num_cols, band):
  """tile_and_column against the order written out in NumPy: bands of `band` tiles,
  tile fastest inside a band, every (tile, column) exactly once."""
  want = [(t, c) for first in range(0, num_tiles, band) for c in range(num_cols)
          for t in range(first, min(first + band, num_tiles))]
  pid = jnp.arange(num_tiles * num_cols, dtype=jnp.int32)
  tile, col = tile_and_column(pid, num_tiles=num_tiles, num_cols=num_cols, row_band=band)
  assert list(zip(np.asarray(tile).tolist(), np.asarray(col).tolist())) == want


def _np_group_bands(groups, max_band):
  """The bands written out: runs of one group cut every max_band tiles, each unused tile
  alone; per tile, its band's first tile and size."""
  bands, t = [], 0
  while t < len(groups):
    end = t + 1
    if groups[t] >= 0:
      while end < len(groups) and groups[end] == groups[t] and end - t < max_band:
        end += 1
    bands.append((t, end - t))
    t = end
  return [b for b in bands for _ in range(b[1])]


@pytest.mark.parametrize("groups,max_band", [
    ([0, 0, 0, 0, 0, 1, 1, 2, 5, -1, -1], 16),
    ([0] * 20 + [1] * 3 + [-1], 8),  # a run cut in 8 + 8 + 4
    ([3], 4), ([-1, -1], 2), ([0, 1, 2, 3], 1), ([0, 0, 1, 1, 1, 1], 2)])
def test_group_bands_and_their_launch_order(groups, max_band):
  """group_bands against the bands written out in NumPy; the banded launch order takes
  each band's tiles for one column, then the next column (the tile fastest), visiting
  every (tile, column) once."""
  start, size = group_bands(jnp.asarray(groups, jnp.int32), max_band)
  want = _np_group_bands(groups, max_band)
  assert list(zip(np.asarray(start).tolist(), np.asarray(size).tolist())) == want
  num_cols = 3
  order = [(t, c) for first, n in dict(want).items() for c in range(num_cols)
           for t in range(first, first + n)]
  pid = jnp.arange(len(groups) * num_cols, dtype=jnp.int32)
  tile, col = banded_tile_and_column(pid, num_cols, start, size)
  assert list(zip(np.asarray(tile).tolist(), np.asarray(col).tolist())) == order


def test_banded_launch_order_of_equal_bands_is_tile_and_column():
  """Bands of one size (the last one shorter) give tile_and_column's order."""
  num_cols = 3
  even_start = jnp.asarray([t // 2 * 2 for t in range(7)])
  even_size = jnp.asarray([min(2, 7 - t // 2 * 2) for t in range(7)])
  pid = jnp.arange(7 * num_cols, dtype=jnp.int32)
  got = banded_tile_and_column(pid, num_cols, even_start, even_size)
  ref = tile_and_column(pid, num_tiles=7, num_cols=num_cols, row_band=2)
  np.testing.assert_array_equal(np.stack(got), np.stack(ref))


def test_default_config():
  assert default_matmul_config(128, 2880, 5760, jnp.bfloat16, tiles_per_expert=4) == (
      MatmulConfig(block_n=256, block_k=64, num_warps=8, num_stages=4, row_band=4))
  assert default_matmul_config(128, 4096, 28672, jnp.bfloat16, tiles_per_expert=40).row_band == 16
  # the Triton configs (interpret=True: never the Mosaic ones, whatever the machine)
  assert default_matmul_config(128, 4096, 28672, jnp.bfloat16, interpret=True).row_band == 1
  assert default_matmul_config(128, 2880, 5760, jnp.bfloat16, transposed=True,
                               interpret=True) == MatmulConfig(
      block_n=128, block_k=128, num_warps=8, num_stages=3)
  small = default_matmul_config(16, 20, 24, jnp.float32, interpret=True)
  assert (small.block_n, small.block_k, small.num_warps) == (32, 32, 4)


def test_mosaic_config_bands_follow_the_experts_on_the_pingpong_kernels():
  """The Hopper picker (pure shape logic, so it runs here): the ping-pong gmm launches
  bands that follow each expert's tiles; the cooperative one keeps the even band;
  tgmm has no band."""
  pick = functools.partial(api._mosaic_config, 128, dtype=jnp.bfloat16)  # pylint: disable=protected-access
  pingpong = pick(2880, 5760, transposed=False, row_band=4)
  assert (pingpong.schedule, pingpong.block_n, pingpong.row_band) == ("pingpong", 192, "expert")
  cooperative = pick(4096, 28672, transposed=False, row_band=16)
  assert (cooperative.schedule, cooperative.block_n, cooperative.row_band) == (
      "cooperative", 256, 16)
  assert pick(2880, 5760, transposed=True, row_band=None).row_band is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(lhs=jnp.zeros((48, 8)), groups=jnp.zeros(2, jnp.int32)),
     r"lhs rows must be num_tiles \* TM .* got R=48 rows for num_tiles=2"),
    (dict(lhs=jnp.zeros((16, 8)), groups=jnp.zeros(2, jnp.int32)),
     r"TM a power of two >= 16; got R=16 rows for num_tiles=2"),
    (dict(groups=np.zeros(2, np.int64)), r"tile_group must be an int32 \[num_tiles\] array"),
    (dict(rhs=jnp.zeros((2, 9, 4))), r"rhs must have K=8 \(lhs columns\) on axis 1, got shape"),
    (dict(lhs=jnp.zeros((32, 8), jnp.int32)), r"lhs must be a floating \[R, K\] array"),
])
def test_gmm_errors(kwargs, match):
  args = dict(lhs=jnp.zeros((32, 8)), rhs=jnp.zeros((2, 8, 4)), groups=jnp.zeros(2, jnp.int32))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    gmm(args["lhs"], args["rhs"], args["groups"], implementation="xla")


def test_tile_fill_errors():
  lhs, groups = jnp.zeros((32, 8)), jnp.zeros(2, jnp.int32)
  with pytest.raises(ValueError, match=r"tile_fill must be None or an int32 \(2,\) array \(one "
                                       r"count per tile of tile_group\), got shape \(3,\) and "
                                       r"dtype int32"):
    tgmm(lhs, lhs, groups, num_groups=2, tile_fill=jnp.zeros(3, jnp.int32), implementation="xla")
  with pytest.raises(ValueError, match=r"got shape \(2,\) and dtype float32"):
    tgmm(lhs, lhs, groups, num_groups=2, tile_fill=jnp.zeros(2, jnp.float32),
         implementation="xla")


def test_tgmm_errors():
  with pytest.raises(ValueError, match=r"rhs must be \[R=32, N\], got shape \(16, 4\)"):
    tgmm(jnp.zeros((32, 8)), jnp.zeros((16, 4)), jnp.zeros(2, jnp.int32), num_groups=2)
  with pytest.raises(ValueError, match="num_groups must be an int >= 1, got 0"):
    tgmm(jnp.zeros((32, 8)), jnp.zeros((32, 4)), jnp.zeros(2, jnp.int32), num_groups=0)
  with pytest.raises(ValueError, match="config must be a MatmulConfig or None, got dict"):
    gmm(jnp.zeros((32, 8)), jnp.zeros((2, 8, 4)), jnp.zeros(2, jnp.int32), config={})
  with pytest.raises(ValueError, match=r"MatmulConfig.block_n must be a power of two >= 16"):
    MatmulConfig(block_n=24)
  with pytest.raises(ValueError,
                     match=r"MatmulConfig.row_band must be an int >= 1, None or 'expert', got 0"):
    MatmulConfig(row_band=0)
  with pytest.raises(ValueError, match=r"row_band must be .* got 'experts'"):
    MatmulConfig(row_band="experts", backend="mosaic", schedule="pingpong")
  with pytest.raises(ValueError, match=r"row_band='expert' needs schedule='pingpong', got "
                                       r"schedule='cooperative'"):
    MatmulConfig(row_band="expert", backend="mosaic")
  MatmulConfig(row_band="expert", block_n=192, backend="mosaic", schedule="pingpong")
