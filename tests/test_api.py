"""The one pruning call: it is exactly the schedule → plan → method → engine wiring, by
object or by name, and it refuses what cannot run."""

import copy
import re

import pytest
import torch

import slimexp
from conftest import REPO
from slimexp.errors import SlimexpError
from slimexp.models.adapters import adapter_for
from slimexp.pruning import surgery
from slimexp.pruning.api import PruneSettings, prune
from slimexp.pruning.engine import LayerwiseEngine
from slimexp.pruning.methods.flap import FLAP
from slimexp.pruning.methods.slimgpt import SlimGPT
from slimexp.pruning.methods.slimllm import SlimLLM
from slimexp.pruning.methods.wanda_sp import WandaSP
from slimexp.pruning.plan import plan_layers
from slimexp.pruning.redundancy import CosineSoftmax
from slimexp.pruning.schedules import LogIncrease, Uniform


def _by_hand(model, method, schedule, ratio, calibration, settings):
    """The wiring every caller once wrote out itself."""
    adapter = adapter_for(model)
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    if getattr(schedule, "data_dependent", False):
        similarities = schedule.layer_similarities(model, adapter, calibration, 4, "cpu")
        ratios = schedule.ratios_from_similarities(
            similarities, ratio, geometries, settings.attn_unit, settings.rounding, settings.absorb_rounding
        )
    else:
        ratios = schedule.layer_ratios(ratio, len(geometries))
    targets = plan_layers(geometries, ratios, settings.attn_unit, settings.rounding, settings.absorb_rounding)
    targets = method.plan(targets, geometries, settings.attn_unit)
    return LayerwiseEngine(model, adapter, calibration, 4, "cpu").run(method, targets, settings.attn_unit)


CASES = {
    "wanda_sp": (lambda: WandaSP(), lambda: LogIncrease(), PruneSettings("q_head")),
    "slimgpt": (lambda: SlimGPT(max_group=16, min_group=4), lambda: LogIncrease(), PruneSettings("kv_group")),
    "slimllm": (
        lambda: SlimLLM(),
        lambda: CosineSoftmax(alpha=7.0, n_pruned_frac=1.0),
        PruneSettings("q_head", absorb_rounding=False),
    ),
    "flap": (lambda: FLAP(), lambda: None, PruneSettings("kv_group")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_one_call_is_the_wiring_it_replaces(tiny, case):
    make_method, make_schedule, settings = CASES[case]
    calibration = torch.randint(0, 64, (6, 24), generator=torch.Generator().manual_seed(1))
    model = tiny("gqa", layers=4)
    by_hand = copy.deepcopy(model)
    result = prune(
        model,
        method=make_method(),
        ratio=0.4,
        schedule=make_schedule(),
        calibration=calibration,
        settings=settings,
        batch_size=4,
    )
    schedule = make_schedule() or Uniform()
    infos = _by_hand(by_hand, make_method(), schedule, 0.4, calibration, settings)
    assert result.layers == infos
    for (name, a), (_, b) in zip(model.state_dict().items(), by_hand.state_dict().items()):
        assert torch.equal(a, b), name
    adapter = adapter_for(model)
    assert result.achieved_ratio == pytest.approx(
        1 - surgery.decoder_params(model, adapter) / surgery.decoder_params(tiny("gqa", layers=4), adapter)
    )
    assert result.method["name"] == case and "prune" in result.seconds


def test_by_name_is_the_same_as_by_object(tiny):
    calibration = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(2))
    named, built = tiny("gqa"), tiny("gqa")
    a = slimexp.prune(
        named,
        method="slimgpt",
        schedule="log_increase",
        ratio=0.3,
        calibration=calibration,
        method_settings={"max_group": 16, "min_group": 4},
    )
    b = prune(
        built, method=SlimGPT(max_group=16, min_group=4), schedule=LogIncrease(), ratio=0.3, calibration=calibration
    )
    assert a.layers == b.layers and a.method == b.method and a.schedule == b.schedule
    with pytest.raises(SlimexpError, match="unknown method 'slimgtp'"):
        slimexp.prune(named, method="slimgtp", ratio=0.3)


def test_what_cannot_run_is_refused_before_anything_is_cut(tiny):
    model = tiny("gqa")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(SlimexpError, match="slimgpt needs calibration data"):
        prune(model, method=SlimGPT(), ratio=0.2)
    with pytest.raises(SlimexpError, match="schedule cosine_softmax needs calibration data"):
        slimexp.prune(model, method="magnitude", schedule="cosine_softmax", ratio=0.2)
    with pytest.raises(SlimexpError, match=r"ratio must be in \[0, 1\)"):
        slimexp.prune(model, method="magnitude", ratio=1.0)
    with pytest.raises(SlimexpError, match="attn_unit must be one of"):
        PruneSettings("heads")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_the_readme_example_runs(monkeypatch, capsys):
    """The README's five lines of Python, as written there."""
    text = (REPO / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(import slimexp\n\n?model, tokenizer = slimexp\.load_model.*?)```", text, re.S)
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 6
    exec(compile(snippet, "README.md", "exec"), {})
    achieved, ppl = capsys.readouterr().out.split()[-2:]
    assert abs(float(achieved) - 0.2) <= 0.015 and 1 < float(ppl) < 1e4


@pytest.mark.parametrize("case", [*CASES, "llm_pruner"])
def test_the_result_names_what_each_layer_lost_and_the_scores_it_was_chosen_from(tiny, case):
    """`selections` (for comparisons across devices, bench/device_check.py): the removed
    units and channels in dense indices, matching the pruned widths, and each decision's
    scores, where what was removed scores no higher than what was kept (in a plain cut);
    `on_layer` brackets every layer's work."""
    from slimexp.pruning.methods.llm_pruner import LLMPruner

    make_method, make_schedule, settings = CASES.get(case, (lambda: LLMPruner(), lambda: None, PruneSettings()))
    calibration = torch.randint(0, 64, (6, 24), generator=torch.Generator().manual_seed(1))
    model = tiny("gqa", layers=3)
    dense = surgery.geometry(adapter_for(model).layers(model)[0], adapter_for(model))
    events = []
    result = prune(
        model,
        method=make_method(),
        ratio=0.4,
        schedule=make_schedule(),
        calibration=calibration,
        settings=settings,
        batch_size=4,
        on_layer=lambda index, what: events.append((index, what)),
    )
    assert [s["layer"] for s in result.selections] == [0, 1, 2]
    for selection, info in zip(result.selections, result.layers):
        assert len(selection["ffn"]) == info["ffn_channels"] == dense.d_ff - info["d_ff"]
        assert selection["attn"] == info.get("removed_units", [])
        assert selection["decisions"], "every layer here loses something"
        for decision in selection["decisions"]:
            scores, removed = decision["scores"], decision["removed"]
            assert decision["module"] in ("attn", "ffn") and set(removed) <= set(range(len(scores)))
            kept = [i for i in range(len(scores)) if i not in removed and torch.isfinite(scores[i])]
            # A cut: SlimLLM protects its lowest channels and swaps heads; q_head cuts per KV group.
            cut = case != "slimllm" and (decision["module"] == "ffn" or settings.attn_unit == "kv_group")
            if cut and decision["threshold"] is None and removed and kept:
                assert scores[removed].max() <= scores[kept].min()
    assert events[:2] == [(0, "start"), (0, "end")]
    assert len(events) == (12 if case == "flap" else 6)
