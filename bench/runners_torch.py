"""PyTorch side: every moe_torch_ref implementation, torch.compile of `grouped`, the
transformers GPT-OSS MLP (eager, grouped_mm and peers), and the stages on their own.

Weights are generated on the device from the shared specs each time a module is
built and dropped once the module has copied them, so at most one copy of the
weights stays resident. fwd rows run under torch.no_grad() (JAX's forward builds no
autodiff state either); fwd+bwd rows return torch.autograd.grad of the output with
respect to the input and every weight, as JAX's vjp does.
"""
from __future__ import annotations

import gc

import numpy as np
import torch
import torch.nn.functional as F

import moe_torch_ref
from bench import hashgen, inputs, kernel_timers, torch_ops
from bench.built import Built
from bench.configs import BenchConfig
from bench.plan import CaseSpec
from bench.timing import Protocol
from moe_torch_ref.ops import MoEOptions, route
from moe_torch_ref.weights import NAMES

_WEIGHT_SLICE = (slice(None), slice(0, 8), slice(0, 128))


def _np(t: torch.Tensor) -> np.ndarray:
  t = t.detach()
  if t.dtype in (torch.int32, torch.int64):
    return t.to(torch.int32).cpu().numpy()
  return t.float().cpu().numpy()


def _nbytes(*tensors) -> int:
  return int(sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)))


class TorchRunner:
  """Builds PyTorch rows for one config."""

  framework = "torch"

  def __init__(self, cfg: BenchConfig, protocol: Protocol):
    self.cfg = cfg
    self.protocol = protocol
    self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    self.gpu = self.device.type == "cuda"
    self.dtype = torch.float32 if cfg.dtype == "float32" else torch.bfloat16
    self.capacity = inputs.capacity(cfg)
    self.opts = MoEOptions(top_k=cfg.top_k)
    self._cache: dict = {}
    self._module: tuple[str, torch.nn.Module] | None = None
    self._notebook = inputs.notebook_weights(cfg) if cfg.weights == "notebook" else None
    torch.backends.cuda.matmul.allow_tf32 = False  # the default, stated: fp32 is fp32

  # ---- data ----------------------------------------------------------------------------

  def _hash(self, spec: inputs.TensorSpec) -> torch.Tensor:
    dtype = torch.float32 if spec.float32 else self.dtype
    return hashgen.values_torch(spec.shape, spec.seed, spec.salt, spec.scale_log2,
                                dtype=dtype, device=self.device)

  def weights(self) -> dict[str, torch.Tensor]:
    """A fresh copy of the six weights on the device."""
    if self._notebook is not None:
      return {k: torch.from_numpy(v).to(self.device, self.dtype) for k, v in self._notebook.items()}
    specs = inputs.weight_specs(self.cfg)
    return {name: self._hash(specs[name]) for name in NAMES}

  def _cached(self, key, make):
    if key not in self._cache:
      self._cache[key] = make()
    return self._cache[key]

  def x(self, j: int, grad: bool = False) -> torch.Tensor:
    def make():
      if self.cfg.weights == "notebook":
        return torch.from_numpy(inputs.notebook_x(self.cfg, j)).to(self.device, self.dtype)
      return self._hash(inputs.x_spec(self.cfg, j))
    x = self._cached(("x", j), make)
    if grad:
      return self._cached(("xg", j), lambda: x.detach().clone().requires_grad_(True))
    return x

  def n_sets(self, bytes_per_set: int) -> int:
    return inputs.rotations(self.protocol.rotate, bytes_per_set)

  def _shared_weights(self) -> dict[str, torch.Tensor]:
    return self._cached("weights", self.weights)

  def _routing(self, j: int, variant: str):
    def make():
      idx, w = inputs.routing(self.cfg, j)
      idx_d = torch.from_numpy(idx).to(self.device)
      meta = (torch_ops.binned_meta(idx_d, self.cfg.num_experts, self.capacity)
              if variant == "binned" else torch_ops.dropless_meta(idx_d, self.cfg.num_experts))
      return idx, idx_d, torch.from_numpy(w).to(self.device), meta
    return self._cached(("routing", j, variant), make)

  def router_parity_arrays(self) -> dict[str, np.ndarray]:
    sub = inputs.parity_rows(self.cfg.num_tokens)
    w = self._shared_weights()
    return dict(sub=sub.astype(np.int64), x=_np(self.x(0))[sub],
                router_weight=_np(w["router.weight"]), router_bias=_np(w["router.bias"]))

  def release_inputs(self) -> None:
    self._cache.clear()
    self._module = None
    self.recover()

  # ---- rows ----------------------------------------------------------------------------

  def build(self, case: CaseSpec) -> Built:
    return getattr(self, f"_build_{case.component}")(case)

  def _get_module(self, impl: str, variant: str) -> torch.nn.Module:
    if self._module is not None and self._module[0] == impl:
      return self._module[1]
    self._module = None
    self._cache.pop("weights", None)
    self.recover()
    sd = self.weights()
    cf = self.cfg.capacity_factor if variant == "binned" else None
    if impl.startswith("transformers/"):
      module = moe_torch_ref.create("transformers", sd, top_k=self.cfg.top_k,
                                    experts_implementation=impl.split("/", 1)[1])
    else:
      module = moe_torch_ref.create(impl.removesuffix("+compile"), sd, top_k=self.cfg.top_k,
                                    capacity_factor=cf)
    del sd
    module = module.to(self.device)
    self._module = (impl, module)
    self.recover()
    return module

  def _build_layer(self, case: CaseSpec) -> Built:
    module = self._get_module(case.impl, case.variant)
    call = torch.compile(module) if case.impl.endswith("+compile") else module
    params = list(module.parameters())
    t, h, k = self.cfg.num_tokens, self.cfg.hidden_size, self.cfg.top_k
    sub = inputs.parity_rows(t)
    n = self.n_sets(t * h * self.cfg.dtype_bytes)

    def indices(scores):
      return _np(torch.topk(scores.detach().float(), k, dim=-1).indices)
    if case.mode == "fwd":
      def fn(x):
        with torch.no_grad():
          return call(x)
      ins = [(self.x(j),) for j in range(n)]

      def extract(out):
        return dict(y=_np(out[0])[sub], indices=indices(out[1]))
    else:
      def fn(x, dy):
        y, scores = call(x)
        grads = torch.autograd.grad(y, [x] + params, dy)
        return y.detach(), scores.detach(), grads
      dy = self._cached("dy", lambda: self._hash(inputs.dy_spec(self.cfg)))
      ins = [(self.x(j, grad=True), dy) for j in range(n)]

      def extract(out):
        return dict(y=_np(out[0])[sub], indices=indices(out[1]), dx=_np(out[2][0])[sub])
    detail = ""
    if case.impl.startswith("grouped"):
      probe = self.x(0)[:1]
      detail = "grouped GEMM: " + torch_ops.grouped_matmul(probe)
    return Built(fn=fn, inputs=ins, extract=extract, detail=detail,
                 arg_bytes=_nbytes(*params, *ins[0]))

  def _build_routing(self, case: CaseSpec) -> Built:
    cfg = self.cfg
    w = self._shared_weights()
    rw = w["router.weight"].detach().requires_grad_(case.mode != "fwd")
    rb = w["router.bias"].detach().requires_grad_(case.mode != "fwd")
    sub = inputs.parity_rows(cfg.num_tokens)
    n = self.n_sets(cfg.num_tokens * cfg.hidden_size * cfg.dtype_bytes)
    if case.impl == "sort":  # moe_torch_ref's router: stable sort, ties to the lower index
      def routed(x):
        r = route(x, rw, rb, self.opts)
        return r.indices, r.weights
    else:  # torch.topk, as transformers' GPT-OSS router
      def routed(x):
        top, idx = torch.topk(F.linear(x, rw, rb), cfg.top_k, dim=-1)
        return idx, torch.softmax(top, dim=-1)
    if case.mode == "fwd":
      def fn(x):
        with torch.no_grad():
          return routed(x)
      ins = [(self.x(j),) for j in range(n)]

      def extract(out):
        return dict(indices=_np(out[0]), weights=_np(out[1]))
    else:
      def fn(x, dw):
        idx, wts = routed(x)
        return (idx, wts.detach()) + torch.autograd.grad(wts, [x, rw, rb], dw.to(wts.dtype))
      dw = self._cached("dw", lambda: self._hash(inputs.dw_spec(cfg)))
      ins = [(self.x(j, grad=True), dw) for j in range(n)]

      def extract(out):
        return dict(indices=_np(out[0]), weights=_np(out[1]), dx=_np(out[2])[sub])
    return Built(fn=fn, inputs=ins, extract=extract, arg_bytes=_nbytes(rw, rb, *ins[0]))

  def _buffer_shape(self, variant: str) -> tuple[int, ...]:
    cfg = self.cfg
    if variant == "binned":
      return (cfg.num_experts, self.capacity, cfg.hidden_size)
    return (cfg.num_tokens * cfg.top_k, cfg.hidden_size)

  def _rows(self, variant: str, j: int, grad: bool = False) -> torch.Tensor:
    shape = self._buffer_shape(variant)
    num_rows = int(np.prod(shape[:-1]))
    rows = self._cached(("rows", variant, j), lambda: self._hash(
        inputs.rows_spec(self.cfg, num_rows, j)).view(shape))
    if grad:
      return self._cached(("rowsg", variant, j), lambda: rows.detach().clone().requires_grad_(True))
    return rows

  def _drows(self, variant: str) -> torch.Tensor:
    shape = self._buffer_shape(variant)
    num_rows = int(np.prod(shape[:-1]))
    return self._cached(("drows", variant), lambda: self._hash(
        inputs.drows_spec(self.cfg, num_rows)).view(shape))

  def _build_pack(self, case: CaseSpec) -> Built:
    cfg, variant = self.cfg, case.variant
    shape = self._buffer_shape(variant)
    rsub, tsub = inputs.parity_rows(int(np.prod(shape[:-1]))), inputs.parity_rows(cfg.num_tokens)
    n = self.n_sets(int(np.prod(shape)) * cfg.dtype_bytes)

    def pack(x, idx):
      if variant == "binned":
        return torch_ops.pack_binned(x, idx, cfg.num_experts, self.capacity)
      return torch_ops.pack_dropless(x, idx)
    if case.mode == "fwd":
      def fn(x, idx):
        with torch.no_grad():
          return pack(x, idx)
      ins = [(self.x(j), self._routing(j, variant)[1]) for j in range(n)]

      def extract(out):
        return dict(out=_np(out).reshape(-1, cfg.hidden_size)[rsub])
    else:
      def fn(x, idx, dbuf):
        buf = pack(x, idx)
        return buf.detach(), torch.autograd.grad(buf, [x], dbuf)[0]
      ins = [(self.x(j, grad=True), self._routing(j, variant)[1], self._drows(variant))
             for j in range(n)]

      def extract(out):
        return dict(out=_np(out[0]).reshape(-1, cfg.hidden_size)[rsub], dx=_np(out[1])[tsub])
    return Built(fn=fn, inputs=ins, extract=extract, arg_bytes=_nbytes(*ins[0]),
                 routing=(self._routing(0, variant)[0],
                          self.capacity if variant == "binned" else None))

  def _build_combine(self, case: CaseSpec) -> Built:
    cfg, variant = self.cfg, case.variant
    shape = self._buffer_shape(variant)
    rsub, tsub = inputs.parity_rows(int(np.prod(shape[:-1]))), inputs.parity_rows(cfg.num_tokens)
    n = self.n_sets(int(np.prod(shape)) * cfg.dtype_bytes)
    combine = torch_ops.combine_binned if variant == "binned" else torch_ops.combine_dropless
    grad = case.mode != "fwd"
    sets = []
    for j in range(n):
      _, _, w, meta = self._routing(j, variant)
      wj = self._cached(("wg", variant, j), lambda w=w: w.clone().requires_grad_(True)) if grad else w
      sets.append((self._rows(variant, j, grad=grad), meta, wj))
    if not grad:
      def fn(rows, meta, w):
        with torch.no_grad():
          return combine(rows, meta, w)
      ins = sets

      def extract(out):
        return dict(out=_np(out)[tsub])
    else:
      def fn(rows, meta, w, dy):
        y = combine(rows, meta, w)
        return (y.detach(),) + torch.autograd.grad(y, [rows, w], dy)
      dy = self._cached("dy", lambda: self._hash(inputs.dy_spec(cfg)))
      ins = [s + (dy,) for s in sets]

      def extract(out):
        return dict(out=_np(out[0])[tsub],
                    drows=_np(out[1]).reshape(-1, cfg.hidden_size)[rsub], dw=_np(out[2]))
    return Built(fn=fn, inputs=ins, extract=extract, arg_bytes=_nbytes(ins[0][0], ins[0][2]),
                 routing=(self._routing(0, variant)[0],
                          self.capacity if variant == "binned" else None))

  def _build_experts(self, case: CaseSpec) -> Built:
    cfg, variant = self.cfg, case.variant
    grad = case.mode != "fwd"
    sd = self._shared_weights()
    weights = tuple(sd[k].detach().requires_grad_(grad) for k in NAMES[2:])
    shape = self._buffer_shape(variant)
    rsub = inputs.parity_rows(int(np.prod(shape[:-1])))
    n = self.n_sets(int(np.prod(shape)) * cfg.dtype_bytes)
    metas = [self._routing(j, "dropless")[3] if variant == "dropless" else None for j in range(n)]

    def mlp(rows, meta):
      if variant == "binned":
        return torch_ops.experts_binned(rows, *weights, self.opts)
      return torch_ops.experts_grouped(rows, meta, *weights, self.opts)
    if not grad:
      def fn(rows, meta):
        with torch.no_grad():
          return mlp(rows, meta)
      ins = [(self._rows(variant, j), metas[j]) for j in range(n)]

      def extract(out):
        return dict(out=_np(out).reshape(-1, cfg.hidden_size)[rsub])
    else:
      def fn(rows, meta, g):
        out = mlp(rows, meta)
        return (out.detach(),) + torch.autograd.grad(out, (rows,) + weights, g)
      ins = [(self._rows(variant, j, grad=True), metas[j], self._drows(variant))
             for j in range(n)]

      def extract(out):
        return dict(out=_np(out[0]).reshape(-1, cfg.hidden_size)[rsub],
                    drows=_np(out[1]).reshape(-1, cfg.hidden_size)[rsub],
                    dgate_up=_np(out[2][_WEIGHT_SLICE]))
    detail = "" if variant == "binned" else (
        "grouped GEMM: " + torch_ops.grouped_matmul(self._rows(variant, 0)))
    return Built(fn=fn, inputs=ins, extract=extract, detail=detail,
                 arg_bytes=_nbytes(*weights, ins[0][0]),
                 routing=(self._routing(0, variant)[0],
                          self.capacity if variant == "binned" else None))

  # ---- protocol hooks ------------------------------------------------------------------

  def prepare(self, built: Built):
    return built.fn, None, {}

  def sync(self, out) -> None:
    del out
    if self.gpu:
      torch.cuda.synchronize()

  def memory_begin(self):
    if not self.gpu:
      return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()

  def memory_end(self, base, built: Built) -> dict:
    if base is None:
      return {}
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return dict(peak_mem_bytes=int(peak - base + built.arg_bytes),
                peak_mem_method="torch allocator: peak during the row - resident at its start "
                                "+ one call's arguments (weights included)")

  def kernel_times(self, fn, built: Built, iters: int):
    return kernel_timers.torch_kernel_times(fn, built.inputs, iters)

  def recover(self) -> None:
    gc.collect()
    if self.gpu:
      torch.cuda.empty_cache()

  def device_info(self) -> dict:
    info = dict(torch_device=str(self.device), torch_cuda=torch.version.cuda)
    if self.gpu:
      props = torch.cuda.get_device_properties(0)
      info.update(torch_device_name=props.name, torch_device_memory=int(props.total_memory))
    return info

