"""Row primitives and grouped matmuls of the MoE layer, each "xla" or "pallas".

- `gather_rows(src [N,H], index [R], scale [R] | None) -> [R,H]`: dispatch.
- `scatter_rows(src [T,H], dest [T,K], scale [T,K] | None) -> [R,H]`: the same
  dispatch written from the token side (each source row read once).
- `combine_rows(src [N,H], index [T,K], weight [T,K] | None) -> [T,H]`: weighted
  gather-reduce back to tokens, summed over k in order, in float32; optionally each
  slot adds a bias row first (`bias [B,H]`, `bias_index [T,K]`: the down bias), and a
  product `matmul_lhs [T,E] @ matmul_rhs [E,H]` (bf16) joins the sum before its one
  rounding (the router's share of x's gradient).
- `slot_dots(src [N,H], index [T,K], g [T,H]) -> [T,K]`: per-slot dot products, the
  routing-weight gradient of `combine_rows`.
- `gmm(lhs [R,K], rhs [E,K,N], tile_group [R/TM]) -> [R,N]`: grouped matmul over
  expert-aligned row tiles (the grouped layout's experts); `tgmm(lhs [R,K], g [R,N],
  tile_group [R/TM], num_groups=E) -> [E,K,N]` its weight gradient (told each tile's
  fill, `tile_fill [R/TM]`, it may skip the empty rows). Their kernels live in
  `grouped_matmul.py` (Triton), `grouped_matmul_mgpu.py` (Mosaic GPU, cooperative) and
  `grouped_matmul_pingpong.py` (Mosaic GPU, ping-pong: the default at 192 columns).

- `tile_glu(h [R,2I], bias [E,2I], tile_expert [R/TM], activation=) -> [R,I]`: the experts' bias
  + GLU over the tile layout (0 on unused tiles and past `tile_fill`), and
  `tile_glu_grad` its VJP with per-tile column sums for the bias gradient
  (`api_glu.py`, kernels in `glu.py`).
- `expert_ranks(expert_ids [M], E) -> (position [M], counts [E])`: each slot's stable
  rank within its expert (the dispatch's counting sort; `api_ranks.py`, `ranks.py`).
- `grouped_layout(expert_ids [M], E, capacity=, tile_rows=, num_tiles=)`: the counting
  sort and the whole grouped layout of the dispatch (`reference.GroupedLayout`;
  `api_ranks.py`, `layout.py`).
- `top_k_softmax(logits [T,E], bias [E], top_k=K) -> (logits + bias, indices [T,K],
  weights [T,K])`: the GPT-OSS router after its GEMM (`api_topk.py`, `topk.py`).
- `gmm_glu(lhs [R,K], rhs [E,K,2I], bias [E,2I], tile_group [R/TM], activation=) -> [R,I]`: `gmm`
  then `tile_glu` in one op; on a Hopper GPU one Mosaic GPU kernel with the GLU in
  its epilogue, so the [R, 2I] products never reach HBM (`return_h=True`, the training
  forward, writes them too, for the backward).

An index < 0 marks an empty slot (reads nothing, contributes exactly 0).

Notes for the docs
------------------
Backend. The Pallas kernels are lowered through Pallas's Triton backend
(`pallas_call` with Triton `CompilerParams`). jax 0.11 marks that backend deprecated
in favour of Mosaic GPU, but Mosaic GPU kernels are written against a different API
(`plgpu.kernel`, warpgroup semantics) and have no `interpret=True` twin on CPU, so
CI could not run the very kernel the GPU compiles. Triton stays available through
jax 0.12, and the row kernels need nothing Triton lacks. Since jax 0.10 the default
GPU lowering of `pallas_call` is Mosaic GPU, so every call passes Triton compiler
params explicitly; all version-dependent imports sit in `moe_jax/_compat.py`. The
grouped matmuls are the exception: on a Hopper GPU they run Mosaic GPU kernels
(`grouped_matmul_mgpu`, TMA and wgmma, 10-40% faster there), picked by
`default_matmul_config` and `MatmulConfig.backend`; their Triton twins run elsewhere.
So does `gmm_glu`, whose fused form exists on Mosaic GPU only (elsewhere it is the
Triton gmm then the GLU kernel).

Tiling. Each program owns one [block_rows, block_h] tile of the output (rows are R
for the gather, T for combine and slot_dots) and receives the whole source column
tile `src[:, j*BH:(j+1)*BH]` through a `BlockSpec((N, BH))`; it indexes that ref with
its int32 row vector, which Triton turns into one pointer tensor (a vectorised
gather). Block sizes are powers of two because Triton loads and stores must be;
defaults come from `default_config` (BH = 128 or 256, whichever masks fewer lanes of
H, or next_pow2(H) below 128; BR*BH ~ 8K elements for the gather, 4K for combine and
slot_dots, whose f32 accumulator shares the registers; 4 warps, 1 stage). The grid
launches row blocks fastest, except in tile_glu(_grad) and the unscaled pack, which
walk each row block's column blocks first so that the programs resident together read
whole rows (`_tiles.Order`; each kernel's order as measured, bench/NOTES.md variant 45).

Masking, not padding. Triton does not mask partial blocks, so the kernels mask by
hand and nothing is copied to pad: loads of the index/weight tail (rows >= R or T)
read -1/0, loads of columns >= H read 0, stores are masked to the in-bounds part of
the tile, and each mask is emitted only when the extent is not a multiple of the
block. Empty slots (index < 0) are clamped to row 0 and masked off, and indices >= N
are clamped to N-1, so no computed address ever leaves the source. Empty slots are
zeroed after any multiplication, so a NaN/inf weight, scale or g never leaks into
them. `slot_dots` splits the H reduction over column tiles into partials
[H/BH, T, next_pow2(K)] that XLA sums in a fixed order. No kernel uses atomics, so
results are deterministic, and in interpret mode duplicates behave as on the GPU.
"""
from moe_jax.kernels.api import (
    IMPLEMENTATIONS,
    Implementation,
    combine_rows,
    default_matmul_config,
    gather_rows,
    gmm,
    resolve_implementation,
    scatter_rows,
    slot_dots,
    tgmm,
)
from moe_jax.kernels.api_ranks import expert_ranks, grouped_layout
from moe_jax.kernels.api_topk import top_k_softmax
from moe_jax.kernels.api_glu import default_glu_config, gmm_glu, tile_glu, tile_glu_grad
from moe_jax.kernels.block_config import BlockConfig, MatmulConfig, default_config

__all__ = [
    "IMPLEMENTATIONS",
    "BlockConfig",
    "Implementation",
    "MatmulConfig",
    "combine_rows",
    "default_config",
    "default_glu_config",
    "default_matmul_config",
    "expert_ranks",
    "gather_rows",
    "gmm",
    "gmm_glu",
    "grouped_layout",
    "resolve_implementation",
    "scatter_rows",
    "slot_dots",
    "tgmm",
    "tile_glu",
    "tile_glu_grad",
    "top_k_softmax",
]
