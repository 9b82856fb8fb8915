"""MoELayer.from_safetensors agrees with moe_torch_ref on the same weights file."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import moe_torch_ref
from moe_jax import MoELayer
from moe_torch_ref import weights as W


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def weights_file(tmp_path_factory, request):
  cfg = W.WeightConfig(num_experts=8, top_k=2, hidden_size=48, intermediate_size=24,
                       dtype=request.param)
  path = tmp_path_factory.mktemp("w") / "moe.safetensors"
  W.save(path, W.generate(cfg, "nonzero-bias"), cfg)
  return path


@pytest.mark.parametrize("impl", ["xla", "pallas"])
@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, None])
def test_matches_binned_loop_fp32(tmp_path, impl, capacity_factor):
  cfg = W.WeightConfig(num_experts=8, top_k=2, hidden_size=48, intermediate_size=24,
                       dtype="float32")
  path = tmp_path / "moe.safetensors"
  W.save(path, W.generate(cfg, "nonzero-bias"), cfg)
  layer = MoELayer.from_safetensors(path, capacity_factor=capacity_factor, implementation=impl,
                                    precision="highest")
  sd, _ = W.load(path)
  ref = moe_torch_ref.create("binned_loop", sd, top_k=2, capacity_factor=capacity_factor)
  x = torch.randn(2, 25, 48, generator=torch.Generator().manual_seed(123))
  with torch.no_grad():
    stages = ref.stages(x)
    y_ref, _ = ref(x)
  y, aux = layer(jnp.asarray(x.numpy()))
  np.testing.assert_array_equal(aux["expert_indices"], stages["expert_indices"].reshape(50, 2))
  np.testing.assert_allclose(aux["router_logits"], stages["router_logits"].reshape(50, 8),
                             rtol=1e-5, atol=1e-6)
  if capacity_factor is not None:
    np.testing.assert_array_equal(~_keep(aux, layer, 50), stages["dropped"].reshape(50, 2).numpy())
  np.testing.assert_allclose(np.asarray(y), y_ref.numpy(), rtol=1e-5, atol=1e-6)


def _keep(aux, layer, num_tokens):
  from moe_jax import make_dispatch
  meta = make_dispatch(aux["expert_indices"], layer.config.num_experts,
                       layer.config.capacity(num_tokens))
  return np.asarray(meta.keep).reshape(num_tokens, -1)


def test_bf16_file_loads_bit_exactly(weights_file):
  sd, cfg = W.load(weights_file)
  layer = MoELayer.from_safetensors(weights_file)
  assert layer.config.num_experts == 8 and layer.config.top_k == 2
  back = layer.to_state_dict()
  for name, tensor in sd.items():
    want = tensor.float().numpy()
    np.testing.assert_array_equal(np.asarray(back[name], np.float32), want)
    assert str(back[name].dtype) == cfg.dtype


def test_both_sides_use_the_same_names():
  from moe_jax.convert import STATE_DICT_NAMES
  assert STATE_DICT_NAMES == W.NAMES


def test_from_state_dict_takes_torch_bf16_tensors_bit_exactly():
  import jax.numpy as jnp
  from moe_jax import MoEConfig
  wcfg = W.WeightConfig(num_experts=4, top_k=2, hidden_size=16, intermediate_size=8,
                        dtype="bfloat16")
  sd = W.generate(wcfg, "nonzero-bias")
  cfg = MoEConfig(num_experts=4, top_k=2, hidden_size=16, intermediate_size=8,
                  dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  layer = MoELayer.from_state_dict(cfg, {"mlp." + k: v for k, v in sd.items()})
  for name, value in layer.to_state_dict().items():
    assert str(value.dtype) == "bfloat16"
    np.testing.assert_array_equal(value.view(np.uint16), sd[name].view(torch.int16).numpy().view(np.uint16))
