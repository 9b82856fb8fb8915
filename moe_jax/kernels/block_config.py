"""`BlockConfig`: the tile sizes and launch parameters of the row kernels."""
from __future__ import annotations

import dataclasses

# Largest tensor Triton materialises (its `TRITON_MAX_TENSOR_NUMEL`).
_MAX_TILE_ELEMENTS = 1 << 20
# Candidate column tiles for H > 128; the one that wastes fewest masked lanes wins.
_BLOCK_H_CHOICES = (256, 128)
# Gather moves data only: 8K elements per tile read at HBM speed on an H100 with 4 warps.
GATHER_TILE_ELEMENTS = 8192
# Combine and slot_dots hold an f32 accumulator or g tile beside the loaded rows.
REDUCE_TILE_ELEMENTS = 4096


def _is_power_of_two(n: int) -> bool:
  return n >= 1 and (n & (n - 1)) == 0


def _check_launch(owner: str, num_warps, num_stages) -> None:
  """Validates Triton launch parameters; errors name `owner`'s field."""
  if not isinstance(num_warps, int) or not (_is_power_of_two(num_warps) and num_warps <= 32):
    raise ValueError(f"{owner}.num_warps must be a power of two in [1, 32], got {num_warps!r}")
  if not isinstance(num_stages, int) or num_stages < 1:
    raise ValueError(f"{owner}.num_stages must be an int >= 1, got {num_stages!r}")


def next_power_of_two(n: int) -> int:
  """Smallest power of two >= max(n, 1)."""
  return 1 << max(n - 1, 0).bit_length()


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockConfig:
  """Tile of one program of a row kernel, and its Triton launch parameters.

  Each program owns a `[block_rows, block_h]` tile: rows are output rows (R for
  `gather_rows`, T for `combine_rows` and `slot_dots`) or, for `scatter_rows`, source
  rows (T) or the output rows it zeroes (R); columns a slice of
  H. Loads and stores in Triton must move a power-of-two number of elements, so both
  sizes are powers of two; tails of R, T and H are masked, never padded.

  Attributes:
    block_rows: rows per program (see above), a power of two.
    block_h: columns of H per program, a power of two.
    num_warps: Triton warps per program, a power of two in [1, 32].
    num_stages: Triton software-pipelining stages, >= 1 (the kernels have no loop
      to pipeline, so 1 spends no shared memory).
  """

  block_rows: int
  block_h: int
  num_warps: int = 4
  num_stages: int = 1

  def __post_init__(self):
    for name in ("block_rows", "block_h"):
      value = getattr(self, name)
      if not isinstance(value, int) or not _is_power_of_two(value):
        raise ValueError(f"BlockConfig.{name} must be a power of two >= 1, got {value!r}")
    if self.block_rows * self.block_h > _MAX_TILE_ELEMENTS:
      raise ValueError(
          f"BlockConfig.block_rows * block_h must be <= {_MAX_TILE_ELEMENTS} elements"
          f" (Triton's largest tensor), got {self.block_rows} * {self.block_h}"
      )
    _check_launch("BlockConfig", self.num_warps, self.num_stages)


def default_block_h(h: int) -> int:
  """Column tile for H: next_pow2(H) up to 128, else 256 or 128, whichever masks less."""
  if next_power_of_two(h) <= 128:
    return next_power_of_two(h)
  # min() keeps the first (larger) choice on a tie.
  return min(_BLOCK_H_CHOICES, key=lambda b: -(-h // b) * b)


def default_config(num_rows: int, h: int, *, tile_elements: int) -> BlockConfig:
  """A `BlockConfig` for an output of `[num_rows, h]` with ~`tile_elements` per tile.

  Args:
    num_rows: output rows (R or T).
    h: H.
    tile_elements: target block_rows * block_h, a power of two
      (`GATHER_TILE_ELEMENTS` or `REDUCE_TILE_ELEMENTS`).

  Returns:
    block_h from `default_block_h(h)`; block_rows = tile_elements // block_h, but no
    more than next_pow2(num_rows); 4 warps, 1 stage.
  """
  block_h = default_block_h(h)
  block_rows = max(1, min(tile_elements // block_h, next_power_of_two(num_rows)))
  return BlockConfig(block_rows=block_rows, block_h=block_h, num_warps=4, num_stages=1)


# Kernels of the grouped matmuls: Pallas Triton (any GPU, and the CPU interpreter) or
# Pallas Mosaic GPU (sm_90: TMA, wgmma, warp specialisation; 16-bit operands).
MATMUL_BACKENDS = ("triton", "mosaic")
# How the Mosaic gmm's two compute warpgroups share the work (`MatmulConfig.schedule`).
MATMUL_SCHEDULES = ("cooperative", "pingpong")
# Widest ping-pong block: a [128, 256] f32 accumulator per warpgroup spills registers
# (7x slower on an H200, bench/NOTES.md variant 27).
_PINGPONG_MAX_BLOCK_N = 192
# Elements of a ping-pong warpgroup's f32 accumulator: gmm's [128, 192] (192 registers
# per thread), and the most a tgmm [block_k, block_n] block may hold.
PINGPONG_MAX_ACCUMULATOR = 128 * _PINGPONG_MAX_BLOCK_N
# Longest band of row tiles that gmm launches together: under row_band="expert", and
# in the default launch order (`kernels.api.default_matmul_config`).
MAX_GROUP_BAND = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatmulConfig:
  """Tiles and launch parameters of the grouped matmul kernels (`gmm`, `tgmm`).

  The row tile TM is not here: it is the layout's tile (`tile_rows` of the
  dispatch), read off the operand shapes.

  Attributes:
    block_n: output columns per program. Triton: a power of two >= 16. Mosaic: a
      multiple of 64 up to 256 (one wgmma; 192 suits N = 2880).
    block_k: reduction columns per loop step (gmm) or output rows per program
      (tgmm's K). Triton: a power of two >= 16. Mosaic: a multiple of 64.
    num_warps: Triton warps per program, a power of two in [1, 32] (Mosaic: unused,
      a CTA is one TMA and two wgmma warpgroups).
    num_stages: software-pipelining stages of the K loop (Mosaic: shared-memory
      slots of the TMA ring), >= 1.
    row_band: gmm only: the launch order. Programs are launched band by band, a band
      being `row_band` consecutive row tiles; inside a band, the band's row tiles for
      one column block come together, then the next column block. Programs resident
      at the same time then share a few row tiles of lhs and a few column blocks of
      one expert's matrix in L2. 1 launches all column blocks of a row tile together;
      None (one band of every tile) all row tiles of a column block. "expert"
      (ping-pong schedule only): bands that follow the layout, each group's run of
      row tiles one band (split every `MAX_GROUP_BAND` tiles) and each unused tile a
      band of its own, so that no band straddles two experts' weights
      (bench/NOTES.md, variant 44).
    backend: "triton" or "mosaic" (16-bit operands, K and N multiples of 64, gmm
      with TM = 128, on a Hopper GPU; no interpreter).
    mma_in_flight: Mosaic only: wgmma groups each compute warpgroup leaves running
      when a ring step ends, 0 or 1. 0 waits for each step's products before the next
      step is issued; 1 issues the next step first and releases a ring slot one step
      later (the inputs of the running products stay in shared memory). Must be
      below num_stages. Cooperative schedule only.
    schedule: Mosaic only: "cooperative", the two compute warpgroups split each
      output block ([TM, BN] of gmm, [BK, BN] of tgmm) and run its epilogue
      together, or "pingpong", each warpgroup owns whole blocks in turn, so that
      one's epilogue runs under the other's main loop (one wgmma group always in
      flight). A warpgroup then holds the whole block's f32 accumulator: block_n at
      most 192 (gmm's [128, 256] spills registers), and tgmm's block_k * block_n at
      most 128 * 192.
  """

  block_n: int = 128
  block_k: int = 64
  num_warps: int = 4
  num_stages: int = 3
  row_band: int | str | None = None
  backend: str = "triton"
  mma_in_flight: int = 0
  schedule: str = "cooperative"

  def __post_init__(self):
    if self.backend not in MATMUL_BACKENDS:
      raise ValueError(
          f"MatmulConfig.backend must be one of {MATMUL_BACKENDS}, got {self.backend!r}")
    for name in ("block_n", "block_k"):
      value = getattr(self, name)
      if self.backend == "mosaic":
        top = 256 if name == "block_n" else None
        if (not isinstance(value, int) or value < 64 or value % 64
            or (top is not None and value > top)):
          raise ValueError(f"MatmulConfig.{name} must be a multiple of 64"
                           f"{' <= 256' if top else ''} for backend='mosaic', got {value!r}")
      elif not isinstance(value, int) or not _is_power_of_two(value) or value < 16:
        raise ValueError(f"MatmulConfig.{name} must be a power of two >= 16, got {value!r}")
    _check_launch("MatmulConfig", self.num_warps, self.num_stages)
    if self.mma_in_flight not in (0, 1) or isinstance(self.mma_in_flight, bool):
      raise ValueError(f"MatmulConfig.mma_in_flight must be 0 or 1, got {self.mma_in_flight!r}")
    if self.mma_in_flight >= self.num_stages:
      raise ValueError(f"MatmulConfig.mma_in_flight={self.mma_in_flight} must be below "
                       f"num_stages, got num_stages={self.num_stages}")
    if self.schedule not in MATMUL_SCHEDULES:
      raise ValueError(f"MatmulConfig.schedule must be one of {MATMUL_SCHEDULES}, got "
                       f"{self.schedule!r}")
    if self.schedule == "pingpong":
      if self.backend != "mosaic":
        raise ValueError(f"MatmulConfig.schedule='pingpong' needs backend='mosaic', got "
                         f"backend={self.backend!r}")
      if self.block_n > _PINGPONG_MAX_BLOCK_N:
        raise ValueError(f"MatmulConfig.block_n must be <= {_PINGPONG_MAX_BLOCK_N} for "
                         f"schedule='pingpong' (one warpgroup's accumulator), got "
                         f"{self.block_n}")
      if self.mma_in_flight:
        raise ValueError("MatmulConfig.mma_in_flight must be 0 for schedule='pingpong' (it "
                         f"always keeps one group in flight), got {self.mma_in_flight}")
    if self.row_band == "expert":
      if self.schedule != "pingpong":
        raise ValueError("MatmulConfig.row_band='expert' needs schedule='pingpong', got "
                         f"schedule={self.schedule!r}")
    elif self.row_band is not None and (
        not isinstance(self.row_band, int) or isinstance(self.row_band, bool)
        or self.row_band < 1):
      raise ValueError(
          f"MatmulConfig.row_band must be an int >= 1, None or 'expert', got {self.row_band!r}")
