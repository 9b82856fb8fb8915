"""moe-bench's plots: distinct line styles, and placeholders left unlinked."""
import os

from bench import plots


def test_lines_of_one_framework_get_distinct_styles():
  labels = ["jax:xla/binned", "jax:xla/dropless", "jax:pallas/binned", "torch:binned",
            "torch:grouped", "jax:xla/binned"]
  style = plots._styles(labels)
  assert set(style) == set(labels)
  pairs = [(s["color"], s["marker"]) for s in style.values()]
  assert len(set(pairs)) == len(pairs), style
  jax_colors = {style[lab]["color"] for lab in style if lab.startswith("jax")}
  assert jax_colors <= set(plots._SHADES["jax"])
  assert style["torch:binned"]["color"] in plots._SHADES["torch"]


def test_plots_without_data_are_written_but_not_returned(tmp_path):
  rows = [dict(status="ok", wall_ms_median=1.0, sweep="tokens", component="layer",
               framework=fw, impl=impl, mode="fwd", T=t, tokens_per_s=1000.0 * t,
               config=f"cpu-tokens-T{t}")
          for fw, impl in (("jax", "xla/binned"), ("jax", "xla/dropless")) for t in (32, 128)]
  paths = plots.all_plots(rows, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["throughput_vs_tokens.png"]
  assert sorted(os.listdir(tmp_path)) == sorted(
      ["latency.png", "throughput_vs_tokens.png", "roofline.png", "expert_load.png",
       "capacity_sweep.png"])  # the placeholders overwrite any stale plot
