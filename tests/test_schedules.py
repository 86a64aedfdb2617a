"""Per-layer ratio schedules (DESIGN §4 "Schedules", §5 Incremental Pruning Ratio)."""

import math

import pytest

from slimexp.errors import SlimexpError
from slimexp.pruning.plan import plan_layers, planned_ratio
from slimexp.pruning.schedules import LinearDecrease, LinearIncrease, LogDecrease, LogIncrease, Uniform
from slimexp.pruning.units import LayerGeometry

SMOLLM2 = LayerGeometry(hidden=576, n_heads=9, n_kv_heads=3, head_dim=64, d_ff=1536)
LLAMA7B = LayerGeometry(hidden=4096, n_heads=32, n_kv_heads=32, head_dim=128, d_ff=11008)
RAMPS = [LogIncrease, LinearIncrease, LogDecrease, LinearDecrease]


def test_log_increase_is_the_authors_formula():
    ratios = LogIncrease(r_min=0.0625, r_max=0.25).layer_ratios(0.2, 32)
    expected = [0.0625 + (0.25 - 0.0625) * math.log(1 + i) / math.log(32) for i in range(32)]
    assert ratios == pytest.approx(expected, abs=1e-15)
    assert ratios[0] == 0.0625 and ratios[-1] == pytest.approx(0.25)


def test_authors_20_percent_recipe():
    ratios = LogIncrease(r_min=0.0625, r_max=0.25).layer_ratios(0.2, 32)
    assert sum(ratios) / 32 == pytest.approx(0.0625 + 0.7354 * (0.25 - 0.0625), abs=1e-4)
    targets = plan_layers([LLAMA7B] * 32, ratios, "kv_group", "round", False)
    # 6.738 B → 5.439 B: 20.06% of the decoder parameters.
    assert planned_ratio([LLAMA7B] * 32, targets, "kv_group") == pytest.approx(0.2006, abs=5e-5)


def test_shapes_increase_and_decrease():
    inc = LinearIncrease(r_min=0.1, r_max=0.3).layer_ratios(0.2, 5)
    assert inc == pytest.approx([0.1, 0.15, 0.2, 0.25, 0.3])
    assert LinearDecrease(r_min=0.1, r_max=0.3).layer_ratios(0.2, 5) == pytest.approx(inc[::-1])
    log_inc = LogIncrease(r_min=0.1, r_max=0.3).layer_ratios(0.2, 8)
    assert LogDecrease(r_min=0.1, r_max=0.3).layer_ratios(0.2, 8) == pytest.approx(log_inc[::-1])
    assert all(a < b for a, b in zip(log_inc, log_inc[1:]))


@pytest.mark.parametrize("schedule_cls", RAMPS + [Uniform])
@pytest.mark.parametrize("geometry,layers", [(SMOLLM2, 30), (LLAMA7B, 32)], ids=["smollm2", "llama7b"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.25, 0.33, 0.5])
def test_mean_ratio_hits_the_target_after_unit_rounding(schedule_cls, geometry, layers, policy, ratio):
    schedule = schedule_cls()
    ratios = schedule.layer_ratios(ratio, layers)
    assert sum(ratios) / layers == pytest.approx(ratio, abs=1e-12)
    assert all(0 <= r < 1 for r in ratios)
    targets = plan_layers([geometry] * layers, ratios, policy, "round", True)
    assert abs(planned_ratio([geometry] * layers, targets, policy) - ratio) < 0.005
    if schedule_cls is not Uniform:
        assert schedule.describe()["r_max_used"] == pytest.approx(max(ratios))


def test_impossible_targets_are_clear_errors():
    with pytest.raises(SlimexpError, match="r_max"):
        LogIncrease(r_min=0.5).layer_ratios(0.9, 32)  # needs r_max > 1
    with pytest.raises(SlimexpError, match="below r_min"):
        LinearIncrease(r_min=0.0625).layer_ratios(0.05, 32)
    with pytest.raises(SlimexpError):
        LogIncrease(r_min=0.3, r_max=0.2)
    with pytest.raises(SlimexpError):
        LogIncrease(r_min=1.0)
    assert LogIncrease().layer_ratios(0.0, 4) == [0.0] * 4


def test_given_r_max_is_used_as_is_and_described():
    schedule = LogDecrease(r_min=0.05, r_max=0.4)
    ratios = schedule.layer_ratios(0.2, 10)
    assert ratios[0] == pytest.approx(0.4) and ratios[-1] == pytest.approx(0.05)
    assert schedule.describe() == {"name": "log_decrease", "r_min": 0.05, "r_max": 0.4, "r_max_used": 0.4}


def test_selected_layers_prunes_only_those():
    from slimexp.pruning.schedules import SelectedLayers

    assert SelectedLayers([0]).layer_ratios(0.75, 4) == [0.75, 0.0, 0.0, 0.0]
    assert SelectedLayers([1, -1]).layer_ratios(0.5, 4) == [0.0, 0.5, 0.0, 0.5]
    with pytest.raises(SlimexpError, match="outside a model of 4 layers"):
        SelectedLayers([4]).layer_ratios(0.5, 4)
