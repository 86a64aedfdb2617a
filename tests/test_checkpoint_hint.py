"""A pruned checkpoint opened with plain transformers fails; the folder says what loads it."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import slimexp
from slimexp.models.adapters import adapter_for
from slimexp.models.checkpoint import save_pruned
from slimexp.models.model_card import NOTE_KEY
from slimexp.pruning.api import PruneSettings, prune
from slimexp.pruning.methods.magnitude import Magnitude
from slimexp.pruning.schedules import SelectedLayers


def _pruned(model, policy="q_head", ratio=0.5):
    odd = SelectedLayers(list(range(1, len(adapter_for(model).layers(model)), 2)))  # non-uniform widths
    prune(model, method=Magnitude(), ratio=ratio, schedule=odd, settings=PruneSettings(policy))
    return model


@pytest.mark.parametrize("kind", ["gqa", "gemma3"])
def test_saved_folder_names_the_loader(tiny, tmp_path, kind):
    model = _pruned(tiny(kind=kind, layers=4))
    folder = save_pruned(model, tmp_path / "pruned")
    card = (folder / "README.md").read_text()
    assert f'slimexp.load_pruned("{folder}")' in card and "size mismatch" in card
    layer_widths = json.loads((folder / "slimexp.json").read_text())["widths"]
    for i, w in enumerate(layer_widths):
        assert f"| {i} | {w['n_heads']} | {w['n_kv_heads']} | {w['d_ff']} |" in card
    note = json.loads((folder / "config.json").read_text())[NOTE_KEY]
    assert "slimexp.load_pruned" in note and str(folder) in note
    # Harmless to transformers: the config loads (note kept as an attribute), the weights do not.
    assert getattr(AutoConfig.from_pretrained(folder), NOTE_KEY) == note
    with pytest.raises(Exception, match="(?i)size|shape"):
        AutoModelForCausalLM.from_pretrained(folder)
    # And the way the note names works, logits unchanged.
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.allclose(slimexp.load_pruned(folder)(ids).logits, model(ids).logits, atol=1e-6)


def test_a_reloaded_checkpoint_saves_again(tiny, tmp_path):
    """The note travels in the config of a reloaded model; saving that again still works."""
    first = save_pruned(_pruned(tiny("gqa")), tmp_path / "a")
    second = save_pruned(slimexp.load_pruned(first), tmp_path / "b")
    assert str(second) in json.loads((second / "config.json").read_text())[NOTE_KEY]
    assert slimexp.load_pruned(second) is not None
