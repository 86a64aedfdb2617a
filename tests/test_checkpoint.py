"""A pruned model saves and reloads to the same shapes and logits; generate() works."""

import pytest
import torch

import slimexp
from slimexp.errors import SlimexpError
from slimexp.evaluation.cost import total_params
from slimexp.models.adapters import adapter_for
from slimexp.models.checkpoint import save_pruned
from slimexp.pruning import surgery


def _prune_irregularly(model, policy):
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    g = surgery.geometry(layers[0], adapter)
    if g.group_size == 1 or policy == "kv_group":
        surgery.remove_heads(layers[0], adapter, list(range(g.group_size)), [0])
    else:
        surgery.remove_heads(layers[0], adapter, [0, 3], [])
    surgery.remove_channels(layers[0], adapter, [3, 4, 60])
    surgery.add_output_bias(layers[1], adapter, "o", torch.randn(96))
    surgery.remove_channels(layers[1], adapter, list(range(40)))
    surgery.add_output_bias(layers[1], adapter, "down", torch.randn(96))
    # Layer 2 loses everything: output = biases only.
    surgery.remove_heads(layers[2], adapter, list(range(g.n_heads)), list(range(g.n_kv_heads)))
    surgery.remove_channels(layers[2], adapter, list(range(g.d_ff)))
    surgery.add_output_bias(layers[2], adapter, "o", torch.randn(96))


@pytest.mark.parametrize(
    "kind,bias,policy",
    [("mha", False, "kv_group"), ("gqa", False, "kv_group"), ("gqa", False, "q_head"), ("gqa", True, "q_head")],
)
def test_save_and_reload_identical(tiny, tmp_path, kind, bias, policy):
    model = tiny(kind, bias)
    _prune_irregularly(model, policy)
    x = torch.randint(0, 64, (2, 11))
    logits = model(x).logits
    save_pruned(model, tmp_path / "ckpt", metadata={"note": "test"})
    reloaded = slimexp.load_pruned(tmp_path / "ckpt")
    assert total_params(reloaded) == total_params(model)
    assert (reloaded(x).logits - logits).abs().max().item() < 1e-5
    out = reloaded.generate(x[:1], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 17)


def test_generate_with_cache_matches_full_recompute(tiny):
    """The KV cache stays consistent when layer 0 has no heads (positions still counted)."""
    model = tiny("gqa")
    adapter = adapter_for(model)
    layer0 = adapter.layers(model)[0]
    surgery.remove_heads(layer0, adapter, list(range(6)), [0, 1])
    surgery.remove_heads(adapter.layers(model)[1], adapter, [1, 4], [])
    x = torch.randint(0, 64, (1, 9))
    cached = model.generate(x, max_new_tokens=8, do_sample=False, pad_token_id=0)
    uncached = model.generate(x, max_new_tokens=8, do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(cached, uncached)


def test_loading_a_non_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SlimexpError, match="not a slimexp pruned checkpoint"):
        slimexp.load_pruned(tmp_path)
