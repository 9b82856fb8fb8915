"""The API layer: implementation choice, validation, proof that the kernel ran."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax import _compat
from moe_jax.kernels import (
    BlockConfig,
    combine_rows,
    default_config,
    expert_ranks,
    grouped_layout,
    gather_rows,
    resolve_implementation,
    slot_dots,
    tile_glu,
    tile_glu_grad,
    top_k_softmax,
)

from ._support import Twin, bits, lowers_triton, normal, np_combine, random_index

N, T, H, K = 6, 10, 200, 2

# (op, kernel name (or the names of its launches, in order), example arguments) for each
# primitive.
ROW_OPS = [
    pytest.param(
        gather_rows, "moe_gather_rows",
        lambda h=H: (normal(0, (N, h), jnp.bfloat16), random_index(1, (T,), N)), id="gather"),
    pytest.param(
        combine_rows, "moe_combine_rows",
        lambda h=H: (normal(0, (N, h), jnp.bfloat16), random_index(1, (T, K), N),
                     normal(2, (T, K), jnp.float32)), id="combine"),
    pytest.param(
        slot_dots, "moe_slot_dots",
        lambda h=H: (normal(0, (N, h), jnp.bfloat16), random_index(1, (T, K), N),
                     normal(2, (T, h), jnp.bfloat16)), id="slot_dots"),
]
# The tile layout's bias + GLU and its gradient (no index operand), the dispatch's
# counting sort and the router's top-k (no rows at all: the H of `args` is unused).
OPS = ROW_OPS + [
    pytest.param(
        functools.partial(expert_ranks, num_experts=5),
        ("moe_expert_histogram", "moe_expert_ranks"),
        lambda h=H: (random_index(3, (T * K,), 5, p_empty=0.0),), id="expert_ranks"),
    pytest.param(
        functools.partial(grouped_layout, num_experts=5, capacity=3, tile_rows=16,
                          num_tiles=5),
        ("moe_expert_histogram", "moe_grouped_layout"),
        lambda h=H: (random_index(3, (T * K,), 5, p_empty=0.0),), id="grouped_layout"),
    pytest.param(
        functools.partial(top_k_softmax, top_k=3), "moe_top_k_softmax",
        lambda h=H: (normal(4, (T, 7), jnp.float32), normal(5, (7,), jnp.float32)),
        id="top_k_softmax"),
    pytest.param(  # the router's input gradient as the combine's matmul term
        lambda src, index, lhs, rhs, **kw: combine_rows(src, index, matmul_lhs=lhs,
                                                       matmul_rhs=rhs, **kw),
        "moe_combine_rows",
        lambda h=H: (normal(0, (N, h), jnp.bfloat16), random_index(1, (T, K), N),
                     normal(2, (T, 100), jnp.float32), normal(3, (100, h), jnp.bfloat16)),
        id="combine_matmul"),
    pytest.param(
        functools.partial(tile_glu, activation="gpt_oss_glu"), "moe_tile_glu",
        lambda h=H: (normal(0, (4 * T, h), jnp.bfloat16), normal(1, (3, h), jnp.float32),
                     jnp.asarray([2, -1, 0, 0], jnp.int32)), id="tile_glu"),
    pytest.param(
        functools.partial(tile_glu_grad, activation="swiglu"), "moe_tile_glu_grad",
        lambda h=H: (normal(0, (4 * T, h), jnp.bfloat16), normal(1, (3, h), jnp.float32),
                     normal(2, (4 * T, h // 2), jnp.bfloat16),
                     jnp.asarray([2, -1, 0, 0], jnp.int32)), id="tile_glu_grad"),
]


def _names(name: str | tuple[str, ...]) -> list[str]:
  return [name] if isinstance(name, str) else list(name)


class Dispatch(Twin):
  """The requested implementation is the one that runs (no silent fallback), under vmap too."""

  @pytest.mark.parametrize("op,name,args", OPS)
  def test_pallas_call_in_jaxpr(self, op, name, args):
    fn = lambda *a: op(*a, implementation="pallas", interpret=self.INTERPRET)
    assert _compat.pallas_call_names(jax.make_jaxpr(fn)(*args())) == _names(name)

  @pytest.mark.parametrize("op,name,args", OPS)
  def test_xla_has_no_kernel(self, op, name, args):
    fn = lambda *a: op(*a, implementation="xla")
    assert _compat.pallas_call_names(jax.make_jaxpr(fn)(*args())) == []

  def test_vmap_matches_xla(self):
    """vmap goes through the pallas_call batching rule: one more grid axis."""
    src = normal(0, (3, N, H), jnp.bfloat16)
    index = random_index(1, (3, T, K), N)
    g = normal(2, (3, T, H), jnp.bfloat16)
    pallas = lambda op: lambda *a: op(*a, implementation="pallas", interpret=self.INTERPRET)
    xla = lambda op: lambda *a: op(*a, implementation="xla")
    for op, args in [(combine_rows, (src, index)), (slot_dots, (src, index, g))]:
      got, want = jax.vmap(pallas(op))(*args), jax.vmap(xla(op))(*args)
      # bf16 combine output: a different f32 summation may round one ulp apart.
      np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                 rtol=1e-2, atol=1e-2)
    got = jax.vmap(pallas(gather_rows))(src, index[..., 0])
    np.testing.assert_array_equal(bits(got), bits(jax.vmap(xla(gather_rows))(src, index[..., 0])))
    # Only the index batched: src is shared by every program.
    got = jax.vmap(lambda i: pallas(gather_rows)(src[0], i))(index[..., 0])
    want = jax.vmap(lambda i: xla(gather_rows)(src[0], i))(index[..., 0])
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.gpu
class TestDispatchGpu(Dispatch):
  INTERPRET = False

  @pytest.mark.parametrize("op,name,args", OPS)
  def test_kernel_name_in_compiled_module(self, op, name, args):
    fn = lambda *a: op(*a, implementation="pallas")
    text = jax.jit(fn).lower(*args()).as_text()
    assert all(n in text for n in _names(name))

  def test_default_is_pallas_on_gpu(self):
    assert resolve_implementation(None) == "pallas"


class TestDispatchInterpret(Dispatch):
  INTERPRET = True


@lowers_triton
@pytest.mark.parametrize("op,name,args", OPS)
@pytest.mark.parametrize("h", [2880, 100])
def test_lowers_through_triton(op, name, args, h):
  """The compiled (not interpreted) kernel lowers to Triton IR, even on a CPU host."""
  text = _compat.lower_for_cuda(
      lambda *x: op(*x, implementation="pallas", interpret=False), *args(h))
  assert all(n in text for n in _names(name))


def test_default_is_xla_off_gpu():
  if jax.default_backend() == "gpu":
    pytest.skip("the GPU twin checks the GPU default")
  assert resolve_implementation(None) == "xla"
  fn = lambda s, i: gather_rows(s, i)
  args = (normal(0, (N, H), jnp.float32), random_index(1, (T,), N))
  assert _compat.pallas_call_names(jax.make_jaxpr(fn)(*args)) == []


@pytest.mark.parametrize("op,name,args", OPS)
def test_unknown_implementation(op, name, args):
  match = r"implementation must be one of \('xla', 'pallas'\) or None, got 'triton'"
  with pytest.raises(ValueError, match=match):
    op(*args(), implementation="triton")


@pytest.mark.parametrize("op,name,args", ROW_OPS)
@pytest.mark.parametrize("dtype", [jnp.int16, jnp.uint32, jnp.float32])
def test_index_must_be_int32(op, name, args, dtype):
  a = list(args())
  a[1] = a[1].astype(dtype)
  with pytest.raises(ValueError, match=f"index must have dtype int32, got {jnp.dtype(dtype).name}"):
    op(*a, implementation="xla")


def test_index_rank():
  with pytest.raises(ValueError, match=r"index must have shape \[T, K\], got shape \(10,\)"):
    combine_rows(normal(0, (N, H), jnp.float32), random_index(1, (T,), N))
  with pytest.raises(ValueError, match=r"index must have shape \[R\], got shape \(10, 2\)"):
    gather_rows(normal(0, (N, H), jnp.float32), random_index(1, (T, K), N))


def test_src_rank():
  with pytest.raises(ValueError, match=r"src must have shape \[N, H\], got shape \(6,\)"):
    gather_rows(jnp.zeros((N,)), random_index(1, (T,), N))


def test_slot_dots_mismatched_h():
  match = r"g must have shape \[T, H\]=\(10, 200\), got shape \(10, 199\)"
  with pytest.raises(ValueError, match=match):
    slot_dots(normal(0, (N, H), jnp.float32), random_index(1, (T, K), N), jnp.zeros((T, H - 1)))


def test_weight_and_scale_checks():
  src = normal(0, (N, H), jnp.float32)
  match = r"weight must have shape \[T, K\]=\(10, 2\), got shape \(10, 3\)"
  with pytest.raises(ValueError, match=match):
    combine_rows(src, random_index(1, (T, K), N), jnp.ones((T, K + 1)))
  with pytest.raises(ValueError, match="weight must have a floating dtype .*, got int32"):
    combine_rows(src, random_index(1, (T, K), N), jnp.ones((T, K), jnp.int32))
  with pytest.raises(ValueError, match=r"scale must have shape \[R\]=\(10,\), got shape \(9,\)"):
    gather_rows(src, random_index(1, (T,), N), jnp.ones((T - 1,)))
  with pytest.raises(ValueError, match="out_dtype must be a floating dtype, got int32"):
    combine_rows(src, random_index(1, (T, K), N), out_dtype=jnp.int32)
  with pytest.raises(ValueError, match="config must be a BlockConfig or None, got dict"):
    gather_rows(src, random_index(1, (T,), N), implementation="pallas", config={"block_rows": 8})


def test_combine_bias_checks():
  src, index = normal(0, (N, H), jnp.float32), random_index(1, (T, K), N)
  bias, bias_index = jnp.ones((3, H)), random_index(2, (T, K), 3)
  with pytest.raises(ValueError, match=r"bias and bias_index must be given together, got "
                     r"bias=\(3, 200\) and bias_index=None"):
    combine_rows(src, index, bias=bias)
  with pytest.raises(ValueError, match=r"bias must have shape \[B, H=200\] \(H of src\), "
                     r"got shape \(3, 199\)"):
    combine_rows(src, index, bias=jnp.ones((3, H - 1)), bias_index=bias_index)
  with pytest.raises(ValueError, match="bias must have a floating dtype, got int32"):
    combine_rows(src, index, bias=jnp.ones((3, H), jnp.int32), bias_index=bias_index)
  with pytest.raises(ValueError, match=r"bias_index must have shape \[T, K\]=\(10, 2\) "
                     r"\(index's shape\), got shape \(10, 3\)"):
    combine_rows(src, index, bias=bias, bias_index=random_index(2, (T, K + 1), 3))
  with pytest.raises(ValueError, match="bias_index must have dtype int32, got float32"):
    combine_rows(src, index, bias=bias, bias_index=bias_index.astype(jnp.float32))


def test_combine_matmul_checks():
  src, index = normal(0, (N, H), jnp.bfloat16), random_index(1, (T, K), N)
  lhs, rhs = jnp.ones((T, 3)), jnp.ones((3, H), jnp.bfloat16)
  with pytest.raises(ValueError, match=r"matmul_lhs and matmul_rhs must be given together, "
                     r"got matmul_lhs=\(10, 3\) and matmul_rhs=None"):
    combine_rows(src, index, matmul_lhs=lhs)
  with pytest.raises(ValueError, match=r"matmul_lhs must have shape \[T=10, E\] \(T of index\), "
                     r"got shape \(9, 3\)"):
    combine_rows(src, index, matmul_lhs=lhs[:9], matmul_rhs=rhs)
  with pytest.raises(ValueError, match="matmul_lhs must have a floating dtype, got int32"):
    combine_rows(src, index, matmul_lhs=lhs.astype(jnp.int32), matmul_rhs=rhs)
  with pytest.raises(ValueError, match=r"matmul_rhs must have shape \[E, H\]=\(3, 200\) \(E of "
                     r"matmul_lhs, H of src\), got shape \(3, 199\)"):
    combine_rows(src, index, matmul_lhs=lhs, matmul_rhs=rhs[:, :-1])
  for dtype in (jnp.float32, jnp.float16):  # float16: hi would overflow past 65504
    with pytest.raises(ValueError, match=f"matmul_rhs must be bfloat16, got {dtype.__name__}"):
      combine_rows(src, index, matmul_lhs=lhs, matmul_rhs=rhs.astype(dtype))


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
def test_combine_matmul_without_slots_is_the_product(implementation):
  # No slot to read (K = 0, or no source row): the output is the product alone.
  lhs, rhs = normal(5, (T, 3), jnp.float32), normal(6, (3, H), jnp.bfloat16)
  want = np.asarray(lhs, np.float64) @ np.asarray(rhs, np.float64)
  for src, index in [(jnp.ones((N, H), jnp.bfloat16), jnp.zeros((T, 0), jnp.int32)),
                     (jnp.ones((0, H), jnp.bfloat16), -jnp.ones((T, K), jnp.int32))]:
    got = combine_rows(src, index, matmul_lhs=lhs, matmul_rhs=rhs, out_dtype=jnp.float32,
                       implementation=implementation)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
def test_combine_bias_matches_float64(implementation):
  # The "xla" path against float64; the Pallas twin has its own kernel tests.
  src, index = normal(0, (N, H), jnp.float32), random_index(1, (T, K), N)
  bias, bias_index = normal(3, (3, H), jnp.float32), random_index(2, (T, K), 3)
  weight = normal(4, (T, K), jnp.float32)
  got = combine_rows(src, index, weight, bias=bias, bias_index=bias_index,
                     implementation=implementation)
  np.testing.assert_allclose(np.asarray(got, np.float64),
                             np_combine(src, index, weight, bias, bias_index), rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(block_rows=3, block_h=128), "block_rows must be a power of two >= 1, got 3"),
        (dict(block_rows=8, block_h=0), "block_h must be a power of two >= 1, got 0"),
        (dict(block_rows=8, block_h=128, num_warps=3),
         r"num_warps must be a power of two in \[1, 32\], got 3"),
        (dict(block_rows=8, block_h=128, num_stages=0), "num_stages must be an int >= 1, got 0"),
        (dict(block_rows=2048, block_h=1024), "must be <= 1048576 elements"),
    ],
)
def test_block_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    BlockConfig(**kwargs)


@pytest.mark.parametrize(
    "rows,h,tile,want",
    [
        (4096, 2880, 8192, (64, 128)),  # 128 masks 64 lanes of 2880, 256 would mask 192
        (4096, 1152, 8192, (64, 128)),  # 128 divides 1152
        (4096, 4096, 8192, (32, 256)),
        (1, 2880, 8192, (1, 128)),  # never more rows than the output has
        (37, 100, 4096, (32, 128)),  # H below one tile: next_pow2(H)
        (100, 8, 4096, (128, 8)),
    ],
)
def test_default_config(rows, h, tile, want):
  config = default_config(rows, h, tile_elements=tile)
  assert (config.block_rows, config.block_h, config.num_warps, config.num_stages) == (*want, 4, 1)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
def test_empty_extents(implementation):
  src = jnp.ones((N, H), jnp.float32)
  assert gather_rows(src, jnp.zeros((0,), jnp.int32), implementation=implementation).shape == (0, H)
  out = combine_rows(src, jnp.zeros((T, 0), jnp.int32), implementation=implementation)
  np.testing.assert_array_equal(out, np.zeros((T, H)))
  out = slot_dots(jnp.ones((0, H)), -jnp.ones((T, K), jnp.int32), jnp.ones((T, H)),
                  implementation=implementation)
  np.testing.assert_array_equal(out, np.zeros((T, K)))
