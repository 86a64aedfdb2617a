"""Removing a head or channel must equal zeroing its contribution, and nothing else."""

import pytest
import torch

from slimexp.models.adapters import adapter_for
from slimexp.pruning import surgery
from slimexp.pruning.units import AttentionUnits


def _zero_o_columns(layer, adapter, heads, head_dim):
    with torch.no_grad():
        for h in heads:
            adapter.linear(layer, "o").weight[:, h * head_dim : (h + 1) * head_dim] = 0


def _layer_out(model, x):
    return model(x, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("kind,bias", [("mha", False), ("gqa", False), ("gqa", True)])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_removing_units_equals_zeroing_their_output(tiny, kind, bias, policy):
    model = tiny(kind, bias)
    reference = tiny(kind, bias)
    adapter = adapter_for(model)
    layer, ref_layer = adapter.layers(model)[1], adapter.layers(reference)[1]
    units = AttentionUnits(surgery.geometry(layer, adapter), policy)
    chosen = [0] if units.per_kv_group else [0, 4]  # q_head on GQA: one head from each group
    q_heads, kv_heads = units.removal(chosen)
    surgery.remove_heads(layer, adapter, q_heads, kv_heads)
    _zero_o_columns(ref_layer, adapter, q_heads, 16)
    channels = [1, 5, 7, 79]
    surgery.remove_channels(layer, adapter, channels)
    with torch.no_grad():
        adapter.linear(ref_layer, "down").weight[:, channels] = 0
    x = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(_layer_out(model, x), _layer_out(reference, x), atol=1e-5, rtol=1e-5)
    g = surgery.geometry(layer, adapter)
    assert (g.n_heads, g.d_ff) == (units.geometry.n_heads - len(q_heads), 80 - len(channels))
    assert g.n_kv_heads == units.geometry.n_kv_heads - len(kv_heads)


def test_unbalanced_kv_groups_are_refused(tiny):
    model = tiny("gqa")
    adapter = adapter_for(model)
    with pytest.raises(ValueError, match="per KV group"):
        surgery.remove_heads(adapter.layers(model)[0], adapter, [0, 1], [])


def test_empty_modules_output_only_their_bias(tiny):
    model = tiny("gqa")
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    surgery.remove_heads(layer, adapter, list(range(6)), [0, 1])
    surgery.remove_channels(layer, adapter, list(range(80)))
    attn_bias, ffn_bias = torch.randn(96), torch.randn(96)
    surgery.add_output_bias(layer, adapter, "o", attn_bias)
    surgery.add_output_bias(layer, adapter, "down", ffn_bias)
    h = torch.randn(1, 5, 96)
    out, _ = adapter.attn(layer)(h)
    torch.testing.assert_close(out, attn_bias.expand(1, 5, 96))
    torch.testing.assert_close(adapter.ffn(layer)(h), ffn_bias.expand(1, 5, 96))
    assert surgery.widths(layer, adapter) == {
        "n_heads": 0,
        "n_kv_heads": 0,
        "d_ff": 0,
        "o_bias": True,
        "down_bias": True,
    }
    model(torch.randint(0, 64, (1, 7)))


def test_decoder_params_excludes_embeddings_and_norms(tiny):
    model = tiny("gqa")
    adapter = adapter_for(model)
    expected = sum(surgery.geometry(layer, adapter).params for layer in adapter.layers(model))
    assert surgery.decoder_params(model, adapter) == expected
    assert expected == 3 * (96 * 96 * 2 + 96 * 32 * 2 + 3 * 96 * 80)
