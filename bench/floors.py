"""The floors every row is bracketed by, measured in the same run with the same protocol.

- matmul rate: an N x N x N GEMM in the config dtype (fp32 at full precision: JAX
  precision=HIGHEST, PyTorch with TF32 off), 2*N^3 FLOPs per call.
- copy bandwidth: y = x + 1 over a large buffer, 2 * nbytes per call (read + write).
  JAX adds 1 to the buffer's bytes taken as uint32 words (`jax_copy_op`): XLA's bf16
  elementwise loop moved 3.36 TB/s of kernel time on an H200 against 4.28 for 32-bit
  words over the same bytes, while torch's bf16 x + 1 moved 4.2
  (`results/nvidia-h200/copy-probe/`); the floor is the memory's rate, not one loop's.

Each framework measures both; a run then uses, per dtype, the best rate either
framework reached, so JAX and PyTorch rows share one denominator.
"""
from __future__ import annotations

from collections.abc import Sequence

from bench import hashgen
from bench.timing import Protocol, summarize, time_wall


def sizes(gpu: bool, dtype: str) -> tuple[int, int]:
  """(GEMM N, copy buffer elements)."""
  if gpu:
    return (8192 if dtype == "bfloat16" else 4096), (1 << 30) // 4
  return 512, (32 << 20) // 4


def _record(framework: str, dtype: str, n: int, gemm_ms: float, copy_elems: int,
            copy_ms: float, itemsize: int, method: str) -> dict:
  return dict(record="floor", framework=framework, dtype=dtype, matmul_n=n,
              matmul_ms=gemm_ms, matmul_tflops=2 * n**3 / (gemm_ms * 1e-3) / 1e12,
              copy_bytes=2 * copy_elems * itemsize, copy_ms=copy_ms,
              copy_gbps=2 * copy_elems * itemsize / (copy_ms * 1e-3) / 1e9, method=method)


def jax_copy_op(x):
  """y = x + 1 on x's bytes as uint32 words (x: 1-D, 4-byte or 2-byte dtype, even size)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  if x.dtype.itemsize == 4:
    words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(words + 1, x.dtype)
  words = jax.lax.bitcast_convert_type(x.reshape(-1, 4 // x.dtype.itemsize), jnp.uint32)
  return jax.lax.bitcast_convert_type(words + 1, x.dtype).reshape(x.shape)


def measure_jax(dtypes: Sequence[str], protocol: Protocol) -> list[dict]:
  """Floors measured with JAX on its default device."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  gpu = jax.default_backend() == "gpu"
  out = []
  for dtype in dtypes:
    jdt = jnp.float32 if dtype == "float32" else jnp.bfloat16
    n, elems = sizes(gpu, dtype)
    prec = jax.lax.Precision.HIGHEST if dtype == "float32" else None
    mats = [tuple(hashgen.values_jax((n, n), 5, s + 2 * r, 7, dtype=jdt) for s in (0, 1))
            for r in range(2)]
    gemm = jax.jit(lambda a, b: jnp.matmul(a, b, precision=prec)).lower(*mats[0]).compile()
    g = summarize(time_wall(gemm, mats, jax.block_until_ready, protocol).samples_ms)
    del mats
    bufs = [(hashgen.values_jax((elems,), 6, r, 7, dtype=jdt),) for r in range(2)]
    copy = jax.jit(jax_copy_op).lower(*bufs[0]).compile()
    c = summarize(time_wall(copy, bufs, jax.block_until_ready, protocol).samples_ms)
    del bufs
    out.append(_record("jax", dtype, n, g["median"], elems, c["median"], jnp.dtype(jdt).itemsize,
                       "jax.jit matmul / x + 1 on uint32 words, wall median"))
  return out


def measure_torch(dtypes: Sequence[str], protocol: Protocol) -> list[dict]:
  """Floors measured with PyTorch on CUDA if present, else the CPU."""
  import torch  # pylint: disable=import-outside-toplevel
  gpu = torch.cuda.is_available()
  dev = torch.device("cuda" if gpu else "cpu")
  torch.backends.cuda.matmul.allow_tf32 = False

  def sync(_):
    if gpu:
      torch.cuda.synchronize()
  out = []
  for dtype in dtypes:
    tdt = torch.float32 if dtype == "float32" else torch.bfloat16
    n, elems = sizes(gpu, dtype)
    mats = [tuple(hashgen.values_torch((n, n), 5, s + 2 * r, 7, dtype=tdt, device=dev)
                  for s in (0, 1)) for r in range(2)]
    with torch.no_grad():
      g = summarize(time_wall(torch.matmul, mats, sync, protocol).samples_ms)
      del mats
      bufs = [(hashgen.values_torch((elems,), 6, r, 7, dtype=tdt, device=dev),) for r in range(2)]
      c = summarize(time_wall(lambda x: x + 1, bufs, sync, protocol).samples_ms)
      del bufs
    if gpu:
      torch.cuda.empty_cache()
    out.append(_record("torch", dtype, n, g["median"], elems, c["median"],
                       torch.tensor([], dtype=tdt).element_size(),
                       "torch.matmul (TF32 off) / x + 1, wall median"))
  return out


def best(records: Sequence[dict]) -> dict:
  """{"matmul_tflops": {dtype: best rate}, "copy_gbps": best bandwidth} over records."""
  matmul: dict[str, float] = {}
  copy = None
  for r in records:
    matmul[r["dtype"]] = max(matmul.get(r["dtype"], 0.0), r["matmul_tflops"])
    copy = max(copy or 0.0, r["copy_gbps"])
  return {"matmul_tflops": matmul, "copy_gbps": copy}
