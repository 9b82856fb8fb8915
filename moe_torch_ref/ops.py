"""Building blocks of the PyTorch implementations, public for component benchmarks.

The bench times routing, pack, combine and the experts on their own; it builds them
from these, the same functions the `moe_torch_ref` modules run.
"""
from moe_torch_ref._common import MoEOptions, glu, route
from moe_torch_ref.grouped import _GROUPED_MM, grouped_mm_loop, grouped_mm_torch

HAS_GROUPED_MM: bool = _GROUPED_MM is not None
"""Whether this torch has a grouped GEMM kernel (`F.grouped_mm` or `torch._grouped_mm`)."""

__all__ = ["HAS_GROUPED_MM", "MoEOptions", "glu", "grouped_mm_loop", "grouped_mm_torch", "route"]
