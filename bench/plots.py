"""PNG plots from the merged rows (matplotlib, Agg backend, no display needed).

- latency.png: median wall time of the whole layer per implementation, per config.
- throughput_vs_tokens.png: tokens/s against T (the token sweep).
- roofline.png: percent of the roofline floor, layer and experts rows.
- expert_load.png: tokens per expert / mean, one strip per config (heatmap).
- capacity_sweep.png: drop rate and layer time against the capacity factor.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from bench import configs  # pylint: disable=wrong-import-position

COLORS = {"jax": "#1f77b4", "torch": "#d62728"}
# Line plots: each implementation its own colour and marker, from its framework's set
# (blue-green for JAX, red-orange for torch), the same in every plot of a run.
_SHADES = {"jax": ("#1f77b4", "#17becf", "#0b3d91", "#6baed6", "#2ca02c"),
           "torch": ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22")}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _styles(labels) -> dict[str, dict]:
  """matplotlib style (color, marker) per "framework:impl" label, distinct per label."""
  out, seen = {}, {}
  for lab in sorted(set(labels)):
    fw = lab.split(":")[0]
    n = seen[fw] = seen.get(fw, -1) + 1
    shades = _SHADES.get(fw, ("#7f7f7f",))
    out[lab] = dict(color=shades[n % len(shades)], marker=_MARKERS[n % len(_MARKERS)])
  return out


def _ok(r: dict) -> bool:
  return r.get("status") == "ok" and r.get("wall_ms_median") is not None


def _impl(r: dict) -> str:
  return f"{r['framework']}:{r['impl']}"


def _label(r: dict) -> str:
  return _impl(r) + (" !" if r.get("parity_ok") is False else "")


def _empty(path: str, text: str) -> None:
  """A placeholder over any stale plot of an earlier run in the same directory; it is
  not linked from the reports (`all_plots` leaves it out)."""
  fig, ax = plt.subplots(figsize=(6, 2))
  ax.axis("off")
  ax.text(0.5, 0.5, text, ha="center", va="center")
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _main_configs(rows: Sequence[dict]) -> list[str]:
  names = [r["config"] for r in rows if not r.get("sweep")]
  known = list(configs.BY_NAME)
  return sorted(set(names), key=lambda n: known.index(n) if n in known else len(known))


def latency(rows: Sequence[dict], path: str) -> str | None:
  names = [n for n in _main_configs(rows)
           if any(_ok(r) and r["config"] == n and r["component"] == "layer" for r in rows)]
  if not names:
    return _empty(path, "no layer rows")
  fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.0 + 0.42 * max(
      len({_label(r) for r in rows if r["config"] == n and r["component"] == "layer"})
      for n in names) * len(names)), squeeze=False)
  for ax, name in zip(axes[:, 0], names):
    sel = [r for r in rows if _ok(r) and r["config"] == name and r["component"] == "layer"]
    labels = sorted({_label(r) for r in sel}, key=lambda s: (not s.startswith("jax"), s))
    y = np.arange(len(labels))
    for off, mode, hatch in ((-0.2, "fwd", None), (0.2, "fwd+bwd", "//")):
      vals = []
      for lab in labels:
        hit = [r for r in sel if _label(r) == lab and r["mode"] == mode]
        vals.append(hit[0]["wall_ms_median"] if hit else np.nan)
      colors = [COLORS[lab.split(":")[0]] for lab in labels]
      ax.barh(y + off, vals, height=0.38, color=colors, hatch=hatch, alpha=0.85,
              label=mode, edgecolor="white")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("median wall ms per call (log)")
    ax.set_title(f"{name}: whole layer (solid fwd, hatched fwd+bwd)", fontsize=9)
    ax.invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def throughput(rows: Sequence[dict], path: str, style: dict | None = None) -> str | None:
  sel = [r for r in rows if _ok(r) and r.get("sweep") == "tokens" and r["component"] == "layer"]
  if not sel:
    return _empty(path, "no token sweep in these results")
  fig, ax = plt.subplots(figsize=(8, 5))
  style = style or _styles(_impl(r) for r in sel)
  for (lab, impl, mode) in sorted({(_label(r), _impl(r), r["mode"]) for r in sel}):
    pts = sorted((r["T"], r["tokens_per_s"]) for r in sel if _label(r) == lab and r["mode"] == mode)
    xs, ys = zip(*pts)
    ax.plot(xs, ys, linestyle="-" if mode == "fwd" else "--", label=f"{lab} {mode}",
            **style[impl])
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("tokens T")
  ax.set_ylabel("tokens / s (wall)")
  ax.set_title("Whole layer throughput against tokens")
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def roofline(rows: Sequence[dict], path: str) -> str | None:
  sel = [r for r in rows if _ok(r) and not r.get("sweep") and r.get("pct_roofline")
         and r["component"] in ("layer", "experts")]
  if not sel:
    return _empty(path, "no roofline figures (floors missing)")
  groups = sorted({(r["config"], r["component"], r["mode"]) for r in sel})
  fig, axes = plt.subplots(len(groups), 1, figsize=(10, 1.2 + 1.6 * len(groups)), squeeze=False)
  for ax, (name, comp, mode) in zip(axes[:, 0], groups):
    part = sorted((r for r in sel if (r["config"], r["component"], r["mode"]) == (name, comp, mode)),
                  key=lambda r: (r["framework"] != "jax", r["impl"]))
    ax.bar(range(len(part)), [r["pct_roofline"] for r in part],
           color=[COLORS[r["framework"]] for r in part])
    ax.set_xticks(range(len(part)), [_label(r) for r in part], rotation=30, ha="right", fontsize=6)
    ax.set_ylabel("% of floor", fontsize=7)
    ax.set_title(f"{name} {comp} {mode}: floor / wall time", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _load_row(rows: Sequence[dict], name: str) -> dict | None:
  prefs = [("jax", "xla/dropless"), ("jax", "pallas/dropless"), ("torch", "grouped")]
  cands = [r for r in rows if r["config"] == name and r.get("tokens_per_expert")]
  for fw, impl in prefs:
    for r in cands:
      if (r["framework"], r["impl"], r["component"]) == (fw, impl, "layer"):
        return r
  return cands[0] if cands else None


def expert_load(rows: Sequence[dict], path: str) -> str | None:
  names = [n for n in _main_configs(rows) if _load_row(rows, n) is not None]
  if not names:
    return _empty(path, "no expert-load data")
  fig, axes = plt.subplots(len(names), 1, figsize=(10, 0.9 + 0.75 * len(names)), squeeze=False)
  image = None
  for ax, name in zip(axes[:, 0], names):
    r = _load_row(rows, name)
    load = np.asarray(r["tokens_per_expert"], np.float64)
    rel = load / max(load.mean(), 1e-9)
    image = ax.imshow(rel[None, :], aspect="auto", cmap="viridis", vmin=0.0, vmax=2.0)
    ax.set_yticks([])
    ax.set_title(f"{name} ({r['component']} routing, {r['framework']}:{r['impl']}): "
                 f"load CV {r.get('load_cv', 0):.3f}, drop {r.get('drop_rate', 0):.3f}", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
  axes[-1, 0].set_xlabel("expert")
  fig.colorbar(image, ax=axes[:, 0].tolist(), label="tokens / mean")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def capacity(rows: Sequence[dict], path: str, style: dict | None = None) -> str | None:
  sel = [r for r in rows if _ok(r) and r.get("sweep") == "capacity"]
  if not sel:
    return _empty(path, "no capacity sweep in these results")
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  style = style or _styles(_impl(r) for r in sel)
  for (lab, comp, mode) in sorted({(_label(r), r["component"], r["mode"]) for r in sel}):
    pts = sorted((r["capacity_factor"], r["wall_ms_median"], r.get("drop_rate") or 0.0)
                 for r in sel if (_label(r), r["component"], r["mode"]) == (lab, comp, mode))
    cf, ms, drop = zip(*pts)
    ax1.plot(cf, ms, linestyle="-" if mode == "fwd" else "--", label=f"{lab} {comp} {mode}",
             **style[lab.removesuffix(" !")])
    ax2.plot(cf, drop, marker="o", color="k")
  ax1.set_yscale("log")
  ax1.set(xlabel="capacity factor", ylabel="median wall ms", title="time against capacity")
  ax2.set(xlabel="capacity factor", ylabel="dropped slot fraction", title="drop rate")
  ax1.legend(fontsize=5)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def all_plots(rows: Sequence[dict], out_dir: str) -> list[str]:
  """Writes every plot into out_dir; returns the paths of those with data (one without
  is a placeholder, left unlinked)."""
  os.makedirs(out_dir, exist_ok=True)
  style = _styles(_impl(r) for r in rows if _ok(r))  # one style per implementation
  paths = [latency(rows, os.path.join(out_dir, "latency.png")),
           throughput(rows, os.path.join(out_dir, "throughput_vs_tokens.png"), style),
           roofline(rows, os.path.join(out_dir, "roofline.png")),
           expert_load(rows, os.path.join(out_dir, "expert_load.png")),
           capacity(rows, os.path.join(out_dir, "capacity_sweep.png"), style)]
  return [p for p in paths if p is not None]
