"""An independent float64 numpy MoE, token by token, for checking binned_loop.

Written from the layer's definition, not from the torch code: per token, choose K
experts (ties to the lower index), weight them, and add each kept expert's GLU MLP
output. A slot (t, k) is dropped when its expert already took C earlier slots in
flat order t*K + k.
"""
from __future__ import annotations

import numpy as np


def _softmax(v: np.ndarray) -> np.ndarray:
  z = np.exp(v - v.max())
  return z / z.sum()


def _glu(h: np.ndarray, activation: str, alpha: float, limit: float) -> np.ndarray:
  gate, up = h[0::2], h[1::2]
  if activation == "swiglu":
    return gate / (1.0 + np.exp(-gate)) * up
  gate = np.minimum(gate, limit)
  up = np.clip(up, -limit, limit)
  return (up + 1.0) * gate / (1.0 + np.exp(-alpha * gate))


def moe(x, sd, *, top_k, capacity=None, router="gpt_oss", normalize_topk=True,
        activation="gpt_oss_glu", alpha=1.702, limit=7.0):
  """Returns dict(y [T, H], indices [T, K], weights [T, K], dropped [T, K]) in float64.

  Args:
    x: [T, H] array.
    sd: the six weights as arrays (any float dtype; converted to float64).
    capacity: C, or None for no dropping.
  """
  x = np.asarray(x, np.float64)
  w = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  t_count, _ = x.shape
  e_count = w["router.weight"].shape[0]
  y = np.zeros_like(x)
  indices = np.zeros((t_count, top_k), np.int64)
  weights = np.zeros((t_count, top_k))
  dropped = np.zeros((t_count, top_k), bool)
  load = [0] * e_count
  for t in range(t_count):
    logits = w["router.weight"] @ x[t] + w["router.bias"]
    scores = logits if router == "gpt_oss" else _softmax(logits)
    chosen = np.argsort(-scores, kind="stable")[:top_k]
    if router == "gpt_oss":
      chosen_w = _softmax(logits[chosen])
    else:
      chosen_w = scores[chosen]
      if normalize_topk:
        chosen_w = chosen_w / chosen_w.sum()
    indices[t], weights[t] = chosen, chosen_w
    for k, e in enumerate(chosen):
      load[e] += 1
      if capacity is not None and load[e] > capacity:
        dropped[t, k] = True
        continue
      h = x[t] @ w["experts.gate_up_proj"][e] + w["experts.gate_up_proj_bias"][e]
      a = _glu(h, activation, alpha, limit)
      out = a @ w["experts.down_proj"][e] + w["experts.down_proj_bias"][e]
      y[t] += chosen_w[k] * out
  return {"y": y, "indices": indices, "weights": weights, "dropped": dropped}
