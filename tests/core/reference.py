"""Independent float64 NumPy references for the MoE layer, written from the spec."""
import math

import numpy as np


def route_np(x, w, b, top_k, kind="gpt_oss", normalize=True):
  """Returns logits [T,E], indices [T,K] (ties -> lower index), weights [T,K] in float64."""
  logits = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
  if kind == "gpt_oss":
    idx = np.argsort(-logits, axis=-1, kind="stable")[:, :top_k]
    v = np.take_along_axis(logits, idx, -1)
    e = np.exp(v - v.max(-1, keepdims=True))
    return logits, idx, e / e.sum(-1, keepdims=True)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  idx = np.argsort(-p, axis=-1, kind="stable")[:, :top_k]
  v = np.take_along_axis(p, idx, -1)
  return logits, idx, (v / v.sum(-1, keepdims=True) if normalize else v)


def keep_mask_np(idx, num_experts, capacity):
  """[T,K] bool: a slot survives if fewer than C earlier slots (in t*K+k order) chose its expert."""
  t, k = idx.shape
  seen = np.zeros(num_experts, int)
  keep = np.zeros((t, k), bool)
  for s in range(t * k):
    e = idx[s // k, s % k]
    keep[s // k, s % k] = capacity is None or seen[e] < capacity
    seen[e] += 1
  return keep


def glu_np(h, activation="gpt_oss_glu", alpha=1.702, limit=7.0):
  g, u = h[..., 0::2], h[..., 1::2]
  if activation == "swiglu":
    return g / (1 + np.exp(-g)) * u
  g = np.minimum(g, limit)
  u = np.clip(u, -limit, limit)
  return (u + 1) * g / (1 + np.exp(-alpha * g))


def moe_np(params, x, *, top_k, capacity_factor, kind="gpt_oss", activation="gpt_oss_glu",
           normalize=True, alpha=1.702, limit=7.0):
  """The whole layer, token by token, in float64. Returns (y [T,H], keep [T,K], idx, w)."""
  p = [np.asarray(a, np.float64) for a in params]
  x = np.asarray(x, np.float64)
  t, e = x.shape[0], p[0].shape[0]
  _, idx, w = route_np(x, p[0], p[1], top_k, kind, normalize)
  cap = None if capacity_factor is None else max(1, math.ceil(capacity_factor * t * top_k / e))
  keep = keep_mask_np(idx, e, cap)
  y = np.zeros_like(x)
  for ti in range(t):
    for k in range(top_k):
      if keep[ti, k]:
        ex = idx[ti, k]
        a = glu_np(x[ti] @ p[2][ex] + p[3][ex], activation, alpha, limit)
        y[ti] += w[ti, k] * (a @ p[4][ex] + p[5][ex])
  return y, keep, idx, w
