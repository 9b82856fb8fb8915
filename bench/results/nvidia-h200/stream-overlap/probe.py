"""Can the backward's memory-bound GLU gradient (`tile_glu_grad`) run beside the
compute-bound dW_down `tgmm`, which does not depend on it, on a second stream
(`compute_on("gpu_stream:1")`), with the persistent tgmm given fewer SMs than the GPU
has? gpt-oss-20b's synthetic dropless layout (as `glu-grad/probe.py`). Wall ms per call
of 50 back-to-back calls (kernel sums would count overlapped time twice), the outputs
checked against the sequential ones.

usage (repository root, GPU machine):
  python3 bench/results/nvidia-h200/stream-overlap/probe.py OUT.json
"""
import sys
import time

import jax
import jax.numpy as jnp
from jax.experimental.compute_on import compute_on

from bench.gmm_probe import Log, glu_backward_operands
from moe_jax import _compat, kernels
from moe_jax.kernels import grouped_matmul_pingpong as pp

E, TILES, H, I = 32, 160, 2880, 2880
ACT = dict(activation="gpt_oss_glu")
log = Log(sys.argv[1], device=str(jax.devices()[0]), jax=jax.__version__)
h, b, group, fill, g, w_down = glu_backward_operands(E, TILES, H, I)
a = kernels.tile_glu(h, b, group, fill, implementation="pallas", **ACT)
cfg = kernels.default_matmul_config(128, I, H, jnp.bfloat16, transposed=True)
sms = _compat.num_sms()


def dw_down(a, g, group, fill, num_sms):
  return pp.tgmm(a, g, group, fill, num_groups=E, out_dtype=jnp.bfloat16, config=cfg,
                 num_sms=num_sms)


def on_stream(fn):
  """fn on XLA's stream 1: `compute_on` is a context decorator up to jax 0.10 and takes
  the function and its outputs' memory spaces from 0.11."""
  try:
    return compute_on("gpu_stream:1")(fn)
  except TypeError:
    return compute_on(fn, compute_type="gpu_stream:1", out_memory_spaces=jax.memory.Space.Device)


def inlined(fn):
  """fn with every nested jaxpr (jit) inlined: XLA's stream assignment finds no stream
  for a call nested in an annotated one ("No ExecutionStreamId found for call-start")."""
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top

  def replay(jaxpr, consts, args):
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]  # noqa: E731
    for eqn in jaxpr.eqns:
      ins = [read(v) for v in eqn.invars]
      inner = eqn.params.get("jaxpr")
      if isinstance(inner, jex_core.ClosedJaxpr):
        outs = replay(inner.jaxpr, inner.consts, ins)
      else:
        outs = eqn.primitive.bind(*ins, **eqn.params)
        outs = outs if eqn.primitive.multiple_results else [outs]
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  def wrapped(*args):
    closed = jax.make_jaxpr(fn)(*args)
    return replay(closed.jaxpr, closed.consts, args)[0]
  return wrapped


def make(num_sms, stream):
  tg = lambda a, g, group, fill: dw_down(a, g, group, fill, num_sms)  # noqa: E731
  if stream:
    tg = on_stream(inlined(tg))

  @jax.jit
  def f(a, g, h, b, group, fill):
    d_a = kernels.gmm(g, w_down, group, transpose_rhs=True, implementation="pallas")
    dw = tg(a, g, group, fill)
    dh, sums = kernels.tile_glu_grad(h, b, d_a, group, fill, implementation="pallas", **ACT)
    return dw, dh, sums
  return f


def wall_ms(f, args, n=50):
  jax.block_until_ready(f(*args))
  best = []
  for _ in range(3):
    t0 = time.perf_counter()
    out = None
    for _ in range(n):
      out = f(*args)
    jax.block_until_ready(out)
    best.append((time.perf_counter() - t0) / n * 1e3)
  return best


args = (a, g, h, b, group, fill)
ref = make(sms, False)(*args)
for num_sms, stream in ((sms, False), (sms, True), (sms - 8, True), (sms - 16, True),
                        (sms - 32, True), (sms - 16, False)):
  f = make(num_sms, stream)
  try:
    out = f(*args)
    same = all(bool(jnp.array_equal(u, v)) for u, v in zip(out, ref))
    text = f.lower(*args).compile().as_text()
    log(num_sms=num_sms, stream=stream, ms=wall_ms(f, args), same=same,
        annotated=("_xla_stream_annotation" in text))
  except Exception as e:  # pylint: disable=broad-except
    log(num_sms=num_sms, stream=stream, error=str(e)[:400])
