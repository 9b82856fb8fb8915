"""Configs and the plan: names, scaling notes, and skips that carry their reason."""
import pytest

from bench import configs, plan


def test_select_suites_names_and_globs():
  assert [c.name for c in configs.select("notebook,tokens-T1024")] == ["notebook", "tokens-T1024"]
  assert len(configs.select("capacity")) == 5
  assert {c.name for c in configs.select("tokens-*")} == {f"tokens-T{t}" for t in
                                                         (256, 1024, 4096, 16384)}
  with pytest.raises(ValueError, match="unknown config"):
    configs.select("nope")


def test_reference_configs():
  nb = configs.BY_NAME["notebook"]
  assert (nb.num_experts, nb.hidden_size, nb.top_k, nb.num_tokens, nb.dtype) == (
      128, 1152, 4, 100, "float32")
  large = configs.BY_NAME["sonic-large"]
  assert (large.num_experts, large.hidden_size, large.top_k) == (256, 7168, 8)
  assert "SCALED" in large.note
  oss = configs.BY_NAME["gpt-oss-20b"]
  assert (oss.num_experts, oss.hidden_size, oss.intermediate_size, oss.top_k,
          oss.num_tokens) == (32, 2880, 2880, 4, 4096)
  rb = configs.BY_NAME["routing-bench"]
  assert (rb.num_tokens, rb.hidden_size, rb.num_experts, rb.top_k, rb.seed) == (
      16384, 4096, 128, 2, 17)


def test_from_row_round_trip():
  cfg = configs.BY_NAME["gpt-oss-20b"]
  again = configs.BenchConfig.from_row(dict(config=cfg.name, **cfg.shape_dict()))
  assert again.describe() == cfg.describe()


def _cases(name, **kw):
  kw.setdefault("gpu", True)
  kw.setdefault("memory_bytes", 80 << 30)
  return plan.plan([configs.BY_NAME[name]], **kw)


def test_binned_loop_only_on_small_configs():
  small = [c for c in _cases("notebook") if c.impl == "binned_loop"]
  big = [c for c in _cases("gpt-oss-20b") if c.impl == "binned_loop"]
  assert small and all(c.skip is None for c in small)
  assert big and all("T*K" in c.skip for c in big)


def test_dense_baseline_skipped_over_memory_budget():
  rows = [c for c in _cases("sonic-medium") if c.impl == "gpt_oss_dense"]
  assert rows and all("GiB" in c.skip for c in rows)
  assert all(c.skip is None for c in _cases("gpt-oss-20b") if c.impl == "gpt_oss_dense")


def test_cpu_skips_pallas_and_compile_unless_asked():
  cpu = _cases("cpu-mini", gpu=False)
  assert all(c.skip for c in cpu if c.impl.startswith("pallas/") or c.impl.endswith("compile"))
  asked = _cases("cpu-mini", gpu=False, impls=["jax:pallas/*"])
  assert asked and all(c.skip is None for c in asked)
  assert {c.framework for c in asked} == {"jax"}


def test_every_row_is_planned_once():
  cases = _cases("gpt-oss-20b", peers=("transformers/batched_mm",))
  keys = [c.key for c in cases]
  assert len(keys) == len(set(keys))
  assert any(c.impl == "transformers/batched_mm" for c in cases)


@pytest.mark.parametrize("override, message", [
    (dict(modes=["bwd"]), "--modes must be a comma list of fwd, fwd+bwd; got 'bwd'"),
    (dict(components=["layer", "foo"]),
     "--components must be a comma list of routing, pack, combine, experts, layer; got 'foo'"),
    (dict(frameworks=["jax", "tf"]), "--frameworks must be a comma list of torch, jax; got 'tf'"),
])
def test_unknown_overrides_are_refused(override, message):
  with pytest.raises(ValueError) as err:
    _cases("cpu-mini", gpu=False, **override)
  assert str(err.value) == message


def test_an_impls_glob_must_match_an_implementation():
  with pytest.raises(ValueError, match=r"--impls 'jax:dropless' matches no implementation") as err:
    _cases("cpu-mini", gpu=False, impls=["jax:xla/*", "jax:dropless"])
  assert "jax:xla/dropless" in str(err.value) and "jax:pallas/dropless" in str(err.value)
  # The real names plan rows; a bare impl name matches in either framework.
  rows = _cases("cpu-mini", gpu=False, impls=["jax:*/dropless"])
  assert {(c.component, c.impl) for c in rows} == {
      (c, i) for c in ("pack", "combine", "experts", "layer")
      for i in ("xla/dropless", "pallas/dropless")}
  assert {(c.framework, c.component) for c in _cases("cpu-mini", gpu=False, impls=["binned"])} == {
      ("jax", "experts")} | {("torch", c) for c in ("pack", "combine", "experts", "layer")}


def test_an_impls_glob_must_match_within_the_planned_frameworks_and_components():
  with pytest.raises(ValueError, match=r"'torch:sort' matches no implementation of frameworks "
                                       r"jax and components routing"):
    _cases("cpu-mini", frameworks=["jax"], impls=["torch:sort"])
  with pytest.raises(ValueError, match=r"'jax:xla' matches no implementation of frameworks "
                                       r"torch,jax and components layer;"):
    _cases("cpu-mini", components=["layer"], impls=["jax:xla"])  # routing's name
  # A peer is an implementation only when it is offered.
  with pytest.raises(ValueError, match="transformers/batched_mm"):
    _cases("gpt-oss-20b", impls=["torch:transformers/batched_mm"])
  rows = _cases("gpt-oss-20b", impls=["torch:transformers/batched_mm"],
                peers=("transformers/batched_mm",))
  assert {(c.component, c.impl) for c in rows} == {("layer", "transformers/batched_mm")}
