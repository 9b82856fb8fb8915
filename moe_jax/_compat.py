"""Every JAX import whose name or home moves between jax 0.10.2 and 0.12.

Nothing else in the package imports `jax.experimental.pallas.triton` or touches a
private JAX module; when a JAX release moves something, only this file changes.

What lives here, and why:
- The Triton Pallas module. jax 0.11 marks the Triton backend deprecated (in favour
  of Mosaic GPU, which is driven through `plgpu.kernel`, not `pallas_call`, and has
  no `interpret=True` twin on CPU). We use it on purpose; its DeprecationWarning is
  silenced at this one import.
- `triton_compiler_params`: the class is `CompilerParams` now and was
  `TritonCompilerParams` in older releases. Passing it is not optional: from jax
  0.10.2 on, the default GPU lowering of `pallas_call` is Mosaic GPU
  (`jax_pallas_use_mosaic_gpu` defaults to True), and only a Triton params object
  selects the Triton lowering.
- `load` / `store`: masked loads and stores. `pl.load` / `pl.store` are gone; the
  Triton module's `load(ref, *, mask, other)` / `store(ref, val, *, mask)` replace them.
- `SQUEEZED`: the block-dimension marker for a squeezed dimension (`None` in older
  releases, `pl.squeezed` now).
- `pallas_call_names`: the primitive's parameter that holds `name=` changed
  (`name_and_src_info` before, `name` now); tests use it to prove a kernel ran.
- `mosaic_gpu`: the Mosaic GPU Pallas module (`plgpu`), imported on first use so
  that nothing about it runs at package import. Its kernels (TMA, wgmma, warp
  specialisation) only run on a Hopper GPU.
- `mosaic_gpu_load`: `plgpu.load` of a whole ref. jax 0.10 requires the index
  argument; jax 0.11 deprecates passing it at all (even None).
- `num_sms`, `is_hopper`: the GPU's multiprocessor count (for persistent grids) and
  whether it is an sm_90 part; both are device attributes JAX does not document.
- `lower_for_cuda`: lowers a function for CUDA on a machine without a GPU, which
  turns a kernel into Triton IR. It goes through `Traced.lower(lowering_platforms=)`,
  a semi-private argument. `CAN_LOWER_TRITON_WITHOUT_GPU` says whether that works:
  up to jaxlib 0.10.2 the Triton IR is handed to XLA as bytes; later jaxlibs compile
  it with Triton at lowering time, which needs a GPU.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import importlib.metadata
import inspect
from typing import Any
import warnings

import jax
from jax.experimental import pallas as pl
from jax.extend import core as jex_core

with warnings.catch_warnings():
  warnings.simplefilter("ignore", DeprecationWarning)
  from jax.experimental.pallas import triton as _pl_triton

_TritonCompilerParams = getattr(_pl_triton, "CompilerParams", None) or getattr(
    _pl_triton, "TritonCompilerParams"
)

load = _pl_triton.load
store = _pl_triton.store

SQUEEZED: Any = getattr(pl, "squeezed", None)


def triton_compiler_params(*, num_warps: int, num_stages: int) -> Any:
  """Triton compiler params; passing them makes `pallas_call` lower through Triton."""
  return _TritonCompilerParams(num_warps=num_warps, num_stages=num_stages)


def mosaic_gpu() -> Any:
  """The `jax.experimental.pallas.mosaic_gpu` module (imported on first use)."""
  import jax.experimental.pallas.mosaic_gpu as plgpu  # pylint: disable=g-import-not-at-top
  return plgpu


def mosaic_gpu_load(ref: Any, *, layout: Any, optimized: bool) -> Any:
  """`plgpu.load(ref)` into `layout`, with the index argument only where it is required."""
  plgpu = mosaic_gpu()
  idx = inspect.signature(plgpu.load).parameters.get("idx")
  if idx is not None and idx.default is inspect.Parameter.empty:
    return plgpu.load(ref, (), layout=layout, optimized=optimized)
  return plgpu.load(ref, layout=layout, optimized=optimized)


def num_sms() -> int:
  """Multiprocessors of the default device (132 on an H100 SXM)."""
  count = getattr(jax.devices()[0], "core_count", None)
  if not isinstance(count, int) or count < 1:
    raise ValueError(f"the default device reports no multiprocessor count: {jax.devices()[0]}")
  return count


def is_hopper() -> bool:
  """Whether the default device is an sm_90 GPU (H100, H200), where Mosaic GPU's
  wgmma kernels run."""
  device = jax.devices()[0]
  return device.platform == "gpu" and str(getattr(device, "compute_capability", "")) == "9.0"


def _jaxlib_version() -> tuple[int, ...]:
  """(major, minor, patch) of the installed jaxlib; dev suffixes are dropped."""
  parts = importlib.metadata.version("jaxlib").split(".")[:3]
  return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)


CAN_LOWER_TRITON_WITHOUT_GPU: bool = _jaxlib_version() <= (0, 10, 2)


def lower_for_cuda(fn: Callable[..., Any], *args: Any) -> str:
  """StableHLO text of `jax.jit(fn)(*args)` lowered for CUDA, on any machine."""
  return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def _sub_jaxprs(value: Any) -> Iterator[Any]:
  if isinstance(value, jex_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _kernel_name(params: dict[str, Any]) -> str:
  name = params.get("name")
  if name is None and "name_and_src_info" in params:
    name = getattr(params["name_and_src_info"], "name", None)
  if name is None:
    name = params["jaxpr"].debug_info.func_name
  return str(name)


def pallas_call_names(closed_jaxpr: Any) -> list[str]:
  """Names (`name=`) of every `pallas_call` in a jaxpr, nested jaxprs included."""
  names = []
  stack = list(_sub_jaxprs(closed_jaxpr))
  while stack:
    jaxpr = stack.pop()
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "pallas_call":
        names.append(_kernel_name(eqn.params))
        continue
      for param in eqn.params.values():
        stack.extend(_sub_jaxprs(param))
  return names
