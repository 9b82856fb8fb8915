"""JAX side: builds every moe_jax row (layer and stages) on shared weights and inputs.

Functions take every array as an argument (nothing is closed over as a constant) and
are compiled ahead of time, so compile time is measured on its own and the timed
callable is the compiled executable. fp32 configs use precision="highest" so that
no TF32 is involved, as in PyTorch's default.
"""
from __future__ import annotations

import gc
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import hashgen, inputs, kernel_timers
from bench.built import Built
from bench.configs import BenchConfig
from bench.plan import CaseSpec
from bench.timing import Protocol
from moe_jax import (MoEConfig, MoEParams, binned_experts, binned_gather, binned_scatter,
                     dropless_experts, make_dispatch, moe_forward, params_from_state_dict, route)
from moe_jax.convert import STATE_DICT_NAMES

_WEIGHT_SLICE = (slice(None), slice(0, 8), slice(0, 128))  # of d(gate_up_proj), for parity


def _np(a) -> np.ndarray:
  a = np.asarray(a)
  return a.astype(np.int32) if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32)


class JaxRunner:
  """Builds JAX rows for one config. Holds the weights once; inputs are cached lazily."""

  framework = "jax"

  def __init__(self, cfg: BenchConfig, protocol: Protocol):
    self.cfg = cfg
    self.protocol = protocol
    self.dtype = jnp.float32 if cfg.dtype == "float32" else jnp.bfloat16
    self.precision = "highest" if cfg.dtype == "float32" else None
    self.gpu = jax.default_backend() == "gpu"
    self.capacity = inputs.capacity(cfg)
    self.params = self._params()
    self._cache: dict = {}

  # ---- data ----------------------------------------------------------------------------

  def _hash(self, spec: inputs.TensorSpec):
    dtype = jnp.float32 if spec.float32 else self.dtype
    return hashgen.values_jax(spec.shape, spec.seed, spec.salt, spec.scale_log2, dtype=dtype)

  def _params(self) -> MoEParams:
    if self.cfg.weights == "notebook":
      return params_from_state_dict(inputs.notebook_weights(self.cfg), dtype=self.dtype)
    specs = inputs.weight_specs(self.cfg)
    return MoEParams(*(self._hash(specs[name]) for name in STATE_DICT_NAMES))

  def _cached(self, key, make):
    if key not in self._cache:
      self._cache[key] = make()
    return self._cache[key]

  def x(self, j: int):
    def make():
      if self.cfg.weights == "notebook":
        return jnp.asarray(inputs.notebook_x(self.cfg, j)).astype(self.dtype)
      return self._hash(inputs.x_spec(self.cfg, j))
    return self._cached(("x", j), make)

  def n_sets(self, bytes_per_set: int) -> int:
    return inputs.rotations(self.protocol.rotate, bytes_per_set)

  def _routing(self, j: int, variant: str):
    """Synthetic routing j: (indices, weights, DispatchMeta) on the device."""
    def make():
      idx, w = inputs.routing(self.cfg, j)
      idx_d = jnp.asarray(idx)
      cap = self.capacity if variant == "binned" else None
      meta = jax.jit(make_dispatch, static_argnums=(1, 2))(idx_d, self.cfg.num_experts, cap)
      return idx, idx_d, jnp.asarray(w), meta
    return self._cached(("routing", j, variant), make)

  def router_parity_arrays(self) -> dict[str, np.ndarray]:
    """The parity input's token subset and the router, for the near-tie check."""
    sub = inputs.parity_rows(self.cfg.num_tokens)
    return dict(sub=sub.astype(np.int64), x=_np(self.x(0))[sub],
                router_weight=_np(self.params.router_weight),
                router_bias=_np(self.params.router_bias))

  def release_inputs(self) -> None:
    self._cache.clear()
    gc.collect()

  # ---- rows ----------------------------------------------------------------------------

  def build(self, case: CaseSpec) -> Built:
    return getattr(self, f"_build_{case.component}")(case)

  def _moe_config(self, impl: str, variant: str) -> MoEConfig:
    cfg = self.cfg
    return MoEConfig(num_experts=cfg.num_experts, top_k=cfg.top_k, hidden_size=cfg.hidden_size,
                     intermediate_size=cfg.intermediate_size,
                     capacity_factor=cfg.capacity_factor if variant == "binned" else None,
                     dtype=self.dtype, param_dtype=self.dtype, implementation=impl,
                     precision=self.precision)

  def _build_layer(self, case: CaseSpec) -> Built:
    mc = self._moe_config(case.impl.split("/")[0], case.variant)
    t, h = self.cfg.num_tokens, self.cfg.hidden_size
    sub = inputs.parity_rows(t)
    n = self.n_sets(t * h * self.cfg.dtype_bytes)
    if case.mode == "fwd":
      def fn(params, x):
        y, aux = moe_forward(params, x, mc)
        return y, aux["expert_indices"]
      ins = [(self.params, self.x(j)) for j in range(n)]

      def extract(out):
        return dict(y=_np(out[0])[sub], indices=_np(out[1]))
    else:
      def fn(params, x, dy):
        def f(p, x):
          y, aux = moe_forward(p, x, mc)
          return y, aux["expert_indices"]
        y, vjp, idx = jax.vjp(f, params, x, has_aux=True)
        dparams, dx = vjp(dy)
        return y, idx, dparams, dx
      dy = self._cached("dy", lambda: self._hash(inputs.dy_spec(self.cfg)))
      ins = [(self.params, self.x(j), dy) for j in range(n)]

      def extract(out):
        return dict(y=_np(out[0])[sub], indices=_np(out[1]), dx=_np(out[3])[sub])
    return Built(fn=fn, inputs=ins, extract=extract, aot=True)

  def _build_routing(self, case: CaseSpec) -> Built:
    cfg, p, prec = self.cfg, self.params, self._moe_config("xla", "dropless").lax_precision
    sub = inputs.parity_rows(cfg.num_tokens)
    n = self.n_sets(cfg.num_tokens * cfg.hidden_size * cfg.dtype_bytes)

    def routed(x, rw, rb):
      _, idx, w = route(x, rw, rb, top_k=cfg.top_k, precision=prec, implementation=case.impl)
      return w, idx
    if case.mode == "fwd":
      def fn(x, rw, rb):
        w, idx = routed(x, rw, rb)
        return idx, w
      ins = [(self.x(j), p.router_weight, p.router_bias) for j in range(n)]

      def extract(out):
        return dict(indices=_np(out[0]), weights=_np(out[1]))
    else:
      def fn(x, rw, rb, dw):
        w, vjp, idx = jax.vjp(routed, x, rw, rb, has_aux=True)
        return (idx, w) + vjp(dw)
      dw = self._cached("dw", lambda: self._hash(inputs.dw_spec(cfg)))
      ins = [(self.x(j), p.router_weight, p.router_bias, dw) for j in range(n)]

      def extract(out):
        return dict(indices=_np(out[0]), weights=_np(out[1]), dx=_np(out[2])[sub])
    return Built(fn=fn, inputs=ins, extract=extract, aot=True)

  def _buffer_shape(self, variant: str) -> tuple[int, ...]:
    """The logical buffer both frameworks share: [E, C, H] binned, [M, H] dropless."""
    cfg = self.cfg
    if variant == "binned":
      return (cfg.num_experts, self.capacity, cfg.hidden_size)
    return (cfg.num_tokens * cfg.top_k, cfg.hidden_size)

  def _to_layout(self, rows, variant: str, j: int):
    """Logical rows -> moe_jax's buffer: dropless rows go to their tile rows of routing j
    (empty rows 0), so both frameworks see the same values."""
    if variant == "binned":
      return rows
    meta = self._routing(j, variant)[3]
    return jnp.zeros((meta.num_rows, rows.shape[1]), rows.dtype).at[meta.sorted_row].set(rows)

  def _from_layout(self, out, variant: str) -> np.ndarray:
    """moe_jax's buffer of the parity input (routing 0) -> logical rows [rows, H] (NumPy)."""
    out = _np(out).reshape(-1, self.cfg.hidden_size)
    if variant == "binned":
      return out
    return out[np.asarray(self._routing(0, variant)[3].sorted_row)]

  def _rows(self, variant: str, j: int):
    shape = self._buffer_shape(variant)
    num_rows = int(np.prod(shape[:-1]))
    return self._cached(("rows", variant, j), lambda: self._to_layout(self._hash(
        inputs.rows_spec(self.cfg, num_rows, j)).reshape(shape), variant, j))

  def _drows(self, variant: str, j: int = 0):
    shape = self._buffer_shape(variant)
    num_rows = int(np.prod(shape[:-1]))
    return self._cached(("drows", variant, j), lambda: self._to_layout(self._hash(
        inputs.drows_spec(self.cfg, num_rows)).reshape(shape), variant, j))

  def _build_pack(self, case: CaseSpec) -> Built:
    cfg, impl = self.cfg, case.impl.split("/")[0]
    cap = self.capacity if case.variant == "binned" else None
    shape = self._buffer_shape(case.variant)
    rsub, tsub = inputs.parity_rows(int(np.prod(shape[:-1]))), inputs.parity_rows(cfg.num_tokens)
    n = self.n_sets(int(np.prod(shape)) * cfg.dtype_bytes)

    def gather(x, idx):
      return binned_gather(x, make_dispatch(idx, cfg.num_experts, cap), implementation=impl)
    if case.mode == "fwd":
      fn = gather
      ins = [(self.x(j), self._routing(j, case.variant)[1]) for j in range(n)]

      def extract(out):
        return dict(out=self._from_layout(out, case.variant)[rsub])
    else:
      def fn(x, idx, dbuf):
        buf, vjp = jax.vjp(lambda x: gather(x, idx), x)
        return buf, vjp(dbuf)[0]
      ins = [(self.x(j), self._routing(j, case.variant)[1], self._drows(case.variant, j))
             for j in range(n)]

      def extract(out):
        return dict(out=self._from_layout(out[0], case.variant)[rsub], dx=_np(out[1])[tsub])
    return Built(fn=fn, inputs=ins, extract=extract, aot=True,
                 routing=(self._routing(0, case.variant)[0], cap))

  def _build_combine(self, case: CaseSpec) -> Built:
    cfg, impl = self.cfg, case.impl.split("/")[0]
    cap = self.capacity if case.variant == "binned" else None
    shape = self._buffer_shape(case.variant)
    rsub, tsub = inputs.parity_rows(int(np.prod(shape[:-1]))), inputs.parity_rows(cfg.num_tokens)
    n = self.n_sets(int(np.prod(shape)) * cfg.dtype_bytes)

    def sets(extra=()):
      out = []
      for j in range(n):
        _, _, w, meta = self._routing(j, case.variant)
        out.append((self._rows(case.variant, j), meta, w) + extra)
      return out
    if case.mode == "fwd":
      def fn(rows, meta, w):
        return binned_scatter(rows, meta, w, implementation=impl)
      ins = sets()

      def extract(out):
        return dict(out=_np(out)[tsub])
    else:
      def fn(rows, meta, w, dy):
        y, vjp = jax.vjp(lambda r, w: binned_scatter(r, meta, w, implementation=impl), rows, w)
        return (y,) + vjp(dy)
      ins = sets((self._cached("dy", lambda: self._hash(inputs.dy_spec(cfg))),))

      def extract(out):
        return dict(out=_np(out[0])[tsub],
                    drows=self._from_layout(out[1], case.variant)[rsub], dw=_np(out[2]))
    return Built(fn=fn, inputs=ins, extract=extract, aot=True,
                 routing=(self._routing(0, case.variant)[0], cap))

  def _build_experts(self, case: CaseSpec) -> Built:
    cfg, p = self.cfg, self.params
    cap = self.capacity if case.variant == "binned" else None
    kw = dict(activation="gpt_oss_glu", precision=self._moe_config("xla", "binned").lax_precision)
    impl = case.impl.split("/")[0] if "/" in case.impl else None
    shape = self._buffer_shape(case.variant)
    rsub = inputs.parity_rows(int(np.prod(shape[:-1])))
    n = self.n_sets(int(np.prod(shape)) * cfg.dtype_bytes)
    weights = (p.gate_up_proj, p.gate_up_proj_bias, p.down_proj, p.down_proj_bias)
    if case.variant == "binned":
      def mlp(rows, groups, *w):
        del groups
        return binned_experts(rows, *w, **kw)
      groups = [() for _ in range(n)]
    else:
      def mlp(rows, groups, *w):
        return dropless_experts(rows, groups[0], *w, tile_fill=groups[1], implementation=impl,
                                **kw)
      metas = [self._routing(j, "dropless")[3] for j in range(n)]
      groups = [(m.tile_expert, m.tile_fill) for m in metas]
    if case.mode == "fwd":
      fn = mlp
      ins = [(self._rows(case.variant, j), groups[j]) + weights for j in range(n)]

      def extract(out):
        return dict(out=self._from_layout(out, case.variant)[rsub])
    else:
      def fn(rows, groups, *w_and_g):
        w, g = w_and_g[:-1], w_and_g[-1]
        out, vjp = jax.vjp(lambda r, *w: mlp(r, groups, *w), rows, *w)
        return (out,) + vjp(g)
      ins = [(self._rows(case.variant, j), groups[j]) + weights
             + (self._drows(case.variant, j),) for j in range(n)]

      def extract(out):
        return dict(out=self._from_layout(out[0], case.variant)[rsub],
                    drows=self._from_layout(out[1], case.variant)[rsub],
                    dgate_up=_np(out[2][_WEIGHT_SLICE]))
    return Built(fn=fn, inputs=ins, extract=extract, aot=True,
                 routing=(self._routing(0, case.variant)[0], cap))

  # ---- protocol hooks ------------------------------------------------------------------

  def prepare(self, built: Built) -> tuple[object, float, dict]:
    """AOT-compiles built.fn for inputs[0]: (compiled, compile_ms, memory figures)."""
    t0 = time.perf_counter()
    compiled = jax.jit(built.fn).lower(*built.inputs[0]).compile()
    compile_ms = (time.perf_counter() - t0) * 1e3
    mem = {}
    try:
      ma = compiled.memory_analysis()
      if ma is not None:
        mem["peak_mem_bytes"] = int(ma.argument_size_in_bytes + ma.output_size_in_bytes
                                    + ma.temp_size_in_bytes - ma.alias_size_in_bytes)
        mem["peak_mem_method"] = "xla memory_analysis: arguments + outputs + temporaries"
    except Exception:  # pylint: disable=broad-except
      pass
    return compiled, compile_ms, mem

  @staticmethod
  def sync(out) -> None:
    jax.block_until_ready(out)

  def memory_begin(self):
    return None

  def memory_end(self, token, built: Built) -> dict:
    del token, built
    stats = jax.devices()[0].memory_stats() if self.gpu else None
    return {"process_peak_bytes": int(stats["peak_bytes_in_use"])} if stats else {}

  def kernel_times(self, fn, built: Built, iters: int):
    return kernel_timers.jax_kernel_times(fn, built.inputs, iters)

  def recover(self) -> None:
    gc.collect()

  def device_info(self) -> dict:
    d = jax.devices()[0]
    stats = d.memory_stats() if self.gpu else None
    return dict(jax_backend=jax.default_backend(), jax_device_kind=d.device_kind,
                jax_device_memory=int(stats["bytes_limit"]) if stats else None)
