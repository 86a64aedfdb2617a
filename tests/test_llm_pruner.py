"""LLM-Pruner's Taylor importance against autograd computed directly on tiny models."""

import pytest
import torch

from conftest import prune_uniformly
from slimexp.models.adapters import adapter_for
from slimexp.pruning import surgery
from slimexp.pruning.engine import LayerwiseEngine
from slimexp.pruning.methods.llm_pruner import LLMPruner, authors_counts, reduce_group
from slimexp.pruning.plan import LayerTarget, plan_layers, planned_ratio
from slimexp.pruning.schedules import LayerRange
from slimexp.pruning.units import AttentionUnits, LayerGeometry

ROLES = ("q", "k", "v", "o", "gate", "up", "down")


def _calibration(n=4, seqlen=12, seed=0):
    return torch.randint(0, 64, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _autograd(model, calibration):
    """{(layer, role): (W, G)} with G = ∂L/∂W of the whole batch's mean causal-LM loss."""
    adapter = adapter_for(model)
    model.zero_grad()
    model(calibration, labels=calibration).loss.backward()
    return {
        (i, role): (
            adapter.linear(layer, role).weight.detach().clone(),
            adapter.linear(layer, role).weight.grad.clone(),
        )
        for i, layer in enumerate(adapter.layers(model))
        for role in ROLES
    }


def _per_example_fisher(model, calibration):
    adapter = adapter_for(model)
    fisher = {}
    for example in calibration:
        model.zero_grad()
        model(example[None], labels=example[None]).loss.backward()
        for i, layer in enumerate(adapter.layers(model)):
            for role in ROLES:
                g = adapter.linear(layer, role).weight.grad
                fisher[(i, role)] = fisher.get((i, role), 0) + g.pow(2) / len(calibration)
    return fisher


def _score(model, method, calibration, batch_size, ratio=0.5, policy="kv_group"):
    adapter = adapter_for(model)
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    targets = plan_layers(geometries, [ratio] * len(geometries), policy, "round", True)
    engine = LayerwiseEngine(model, adapter, calibration, batch_size, "cpu")
    method.score_model(engine, targets, policy)
    return engine, targets


@pytest.mark.parametrize("batch_size", [4, 3, 1])
def test_element1_equals_abs_w_times_autograd_gradient(tiny, batch_size):
    calibration = _calibration()
    reference = _autograd(tiny("gqa"), calibration)
    method = LLMPruner("element1")
    _score(tiny("gqa"), method, calibration, batch_size)
    for (i, role), (w, g) in reference.items():
        dim = 0 if role in ("o", "down") else 1
        torch.testing.assert_close(method.row_scores[i][role], (w * g).abs().sum(dim), rtol=1e-4, atol=1e-7)


def test_vector_and_second_order_scores_equal_direct_computation(tiny):
    calibration = _calibration(n=3)
    reference = _autograd(tiny("mha"), calibration)
    fisher = _per_example_fisher(tiny("mha"), calibration)
    for importance in ("vector", "element2", "param_second"):
        method = LLMPruner(importance)
        _score(tiny("mha"), method, calibration, batch_size=3)
        for (i, role), (w, g) in reference.items():
            dim = 0 if role in ("o", "down") else 1
            f = fisher[(i, role)]
            expected = {
                "vector": (w * g).sum(dim).abs(),
                "element2": (w * g - 0.5 * w.pow(2) * f).abs().sum(dim),
                "param_second": (w.pow(2) * f).abs().sum(dim),
            }[importance]
            torch.testing.assert_close(method.row_scores[i][role], expected, rtol=1e-4, atol=1e-8)


def test_one_weight_gradient_at_a_time_and_the_model_is_left_as_found(tiny, monkeypatch):
    model = tiny("gqa")
    adapter = adapter_for(model)
    weights = [adapter.linear(layer, r).weight for layer in adapter.layers(model) for r in ROLES]
    live = []
    method = LLMPruner("element1")
    store = method._store

    def counting_store(key, weight, grad, fisher):
        live.append(sum(w.grad is not None for w in weights))
        store(key, weight, grad, fisher)

    monkeypatch.setattr(method, "_store", counting_store)
    _score(model, method, _calibration(), batch_size=4)
    assert len(live) == len(weights) and max(live) == 1
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_only_the_pruned_layers_are_scored(tiny):
    model = tiny("gqa", layers=3)
    adapter = adapter_for(model)
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    targets = plan_layers(geometries, [0.0, 0.5, 0.0], "kv_group", "round", True)
    method = LLMPruner()
    method.score_model(LayerwiseEngine(model, adapter, _calibration(), 4, "cpu"), targets, "kv_group")
    assert set(method.row_scores) == {1}


@pytest.mark.parametrize("reduction", ["sum", "mean", "max", "prod", "first"])
def test_mha_head_and_channel_scores_reduce_per_index_then_sum_over_head_dim(tiny, reduction):
    calibration = _calibration()
    reference = _autograd(tiny("mha"), calibration)
    model = tiny("mha")
    method = LLMPruner("element1", group_reduction=reduction)
    engine, targets = _score(model, method, calibration, batch_size=4)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[1]
    g = surgery.geometry(layer, adapter)
    rows = {
        r: (w * grad).abs().sum(0 if r in ("o", "down") else 1) for (i, r), (w, grad) in reference.items() if i == 1
    }
    ops = {
        "sum": lambda t: t.sum(0),
        "mean": lambda t: t.mean(0),
        "max": lambda t: t.max(0).values,
        "prod": lambda t: t.prod(0),
        "first": lambda t: t[0],
    }
    per_index = ops[reduction](torch.stack([rows["q"], rows["k"], rows["v"], rows["o"]]))
    expected_heads = per_index.view(g.n_heads, g.head_dim).sum(1)
    expected_channels = ops[reduction](torch.stack([rows["gate"], rows["up"], rows["down"]]))
    from slimexp.pruning.engine import LayerContext

    ctx = LayerContext(1, layer, adapter, targets[1], "kv_group", 4)
    torch.testing.assert_close(method.unit_scores(ctx, {}), expected_heads, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(method.channel_scores(ctx, {}), expected_channels, rtol=1e-4, atol=1e-8)


def test_gqa_fold_authors_scores_strided_heads_and_block_its_own():
    q = torch.arange(6.0).repeat_interleave(2)  # 6 query heads × head_dim 2, head h scores h per index
    scores = {"q": q, "o": torch.zeros(12), "k": torch.zeros(4), "v": torch.zeros(4)}
    g = LayerGeometry(hidden=12, n_heads=6, n_kv_heads=2, head_dim=2, d_ff=4)

    class Ctx:
        index = 0
        geometry = g
        units = AttentionUnits(g, "kv_group")

    authors, block = LLMPruner(gqa_fold="authors"), LLMPruner(gqa_fold="block")
    authors.row_scores = block.row_scores = {0: scores}
    # authors: group 0 ← heads 0, 2, 4; group 1 ← 1, 3, 5. block: group 0 ← 0, 1, 2; group 1 ← 3, 4, 5.
    assert authors.unit_scores(Ctx, {}).tolist() == [2 * (0 + 2 + 4), 2 * (1 + 3 + 5)]
    assert block.unit_scores(Ctx, {}).tolist() == [2 * (0 + 1 + 2), 2 * (3 + 4 + 5)]


def test_authors_counts_floor_the_kept_width():
    llama = LayerGeometry(hidden=4096, n_heads=32, n_kv_heads=32, head_dim=128, d_ff=11008)
    units = AttentionUnits(llama, "kv_group")
    assert authors_counts(llama, units, 0.3)[1] == 3303  # not round(3302.4)
    assert authors_counts(llama, units, 0.25) == (8, 2752)
    llama3 = LayerGeometry(hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128, d_ff=14336)
    assert authors_counts(llama3, AttentionUnits(llama3, "kv_group"), 0.25)[0] == 2
    smollm = LayerGeometry(hidden=576, n_heads=9, n_kv_heads=3, head_dim=64, d_ff=1536)
    assert authors_counts(smollm, AttentionUnits(smollm, "kv_group"), 0.25)[0] == 0  # 3 KV heads: none go
    assert authors_counts(smollm, AttentionUnits(smollm, "q_head"), 0.5)[0] % 3 == 0
    assert authors_counts(smollm, AttentionUnits(smollm, "kv_group"), 0.0) == (0, 0)


def test_authors_recipe_removes_20_3_percent_of_llama_7b():
    llama = LayerGeometry(hidden=4096, n_heads=32, n_kv_heads=32, head_dim=128, d_ff=11008)
    schedule = LayerRange(start=4, end=30, reference_layers=32, layer_ratio=0.25)
    ratios = schedule.layer_ratios(0.2, 32)
    assert [i for i, r in enumerate(ratios) if r] == list(range(4, 30))
    targets = [
        LayerTarget(i, r, *authors_counts(llama, AttentionUnits(llama, "kv_group"), r)) for i, r in enumerate(ratios)
    ]
    assert planned_ratio([llama] * 32, targets, "kv_group") == pytest.approx(0.203, abs=0.0005)


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_layer_range_target_mode_scales_the_range_and_hits_the_mean(ratio):
    schedule = LayerRange()
    ratios = schedule.layer_ratios(ratio, 30)
    assert schedule.layer_bounds(30) == (4, 28)
    assert [i for i, r in enumerate(ratios) if r] == list(range(4, 28))
    assert sum(ratios) / 30 == pytest.approx(ratio)


def test_layer_range_rejects_a_ratio_it_cannot_reach():
    from slimexp.errors import SlimexpError

    with pytest.raises(SlimexpError, match="widen the range"):
        LayerRange(start=4, end=8, reference_layers=32).layer_ratios(0.5, 32)


@pytest.mark.parametrize("kind", ["mha", "gqa"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_llm_pruner_removes_the_lowest_scores_and_the_model_generates(tiny, kind, policy):
    model = tiny(kind)
    adapter = adapter_for(model)
    calibration = _calibration()
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    targets = plan_layers(geometries, [0.5] * 3, policy, "round", True)
    method = LLMPruner()
    scored = {}
    original = method.score_model

    def keep_scores(*args):
        original(*args)
        from slimexp.pruning.engine import LayerContext

        for i, layer in enumerate(adapter.layers(model)):
            ctx = LayerContext(i, layer, adapter, targets[i], policy, 4)
            scored[i] = (method.unit_scores(ctx, {}), ctx.units)

    method.score_model = keep_scores
    _, infos = prune_uniformly(model, method, 0.5, policy, calibration, batch_size=4)
    for i, info in enumerate(infos):
        scores, units = scored[i]
        assert info["removed_units"] == units.lowest(scores, targets[i].attn_units)
        assert info["ffn_channels"] == targets[i].ffn_channels
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_reduce_group_first_is_the_root_matrix():
    stacked = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert reduce_group(stacked, "first").tolist() == [1.0, 5.0]
    assert reduce_group(stacked, "max").tolist() == [3.0, 5.0]


def test_q_head_units_on_gqa_are_scored_by_their_q_rows_and_o_columns():
    torch.manual_seed(0)
    s = {"q": torch.rand(12), "o": torch.rand(12), "k": torch.rand(4), "v": torch.rand(4)}
    g = LayerGeometry(hidden=12, n_heads=6, n_kv_heads=2, head_dim=2, d_ff=4)

    class Ctx:
        index = 0
        geometry = g
        units = AttentionUnits(g, "q_head")

    method = LLMPruner(group_reduction="max")
    method.row_scores = {0: s}
    expected = torch.maximum(s["q"], s["o"]).view(6, 2).sum(1)
    torch.testing.assert_close(method.unit_scores(Ctx, {}), expected)


def _layer_ctx(model, targets, index, policy):
    from slimexp.pruning.engine import LayerContext

    adapter = adapter_for(model)
    return LayerContext(index, adapter.layers(model)[index], adapter, targets[index], policy, 4)


@pytest.mark.parametrize("gqa_fold", ["authors", "block"])
def test_first_on_gqa_kv_groups_is_the_k_rows(tiny, gqa_fold):
    """The authors' llama3 code roots each KV group at k_proj, so `first` is its k rows."""
    calibration = _calibration()
    reference = _autograd(tiny("gqa"), calibration)
    model = tiny("gqa")
    method = LLMPruner("element1", group_reduction="first", gqa_fold=gqa_fold)
    _, targets = _score(model, method, calibration, batch_size=4)
    for i in range(3):
        ctx = _layer_ctx(model, targets, i, "kv_group")
        g = ctx.geometry
        w, grad = reference[(i, "k")]
        expected = (w * grad).abs().sum(1).view(g.n_kv_heads, g.head_dim).sum(1)
        wq, gq = reference[(i, "q")]
        folded_q = (wq * gq).abs().sum(1).view(g.n_kv_heads, -1).sum(1)
        assert not torch.allclose(expected, folded_q)  # the q root would be told apart
        torch.testing.assert_close(method.unit_scores(ctx, {}), expected, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("kind, policy", [("mha", "kv_group"), ("mha", "q_head"), ("gqa", "q_head")])
def test_first_on_mha_heads_and_q_head_units_is_the_q_rows(tiny, kind, policy):
    calibration = _calibration()
    reference = _autograd(tiny(kind), calibration)
    model = tiny(kind)
    method = LLMPruner("element1", group_reduction="first")
    _, targets = _score(model, method, calibration, batch_size=4, policy=policy)
    ctx = _layer_ctx(model, targets, 1, policy)
    g = ctx.geometry
    w, grad = reference[(1, "q")]
    expected = (w * grad).abs().sum(1).view(g.n_heads, g.head_dim).sum(1)
    torch.testing.assert_close(method.unit_scores(ctx, {}), expected, rtol=1e-4, atol=1e-8)


def _magnitude_reference(model, index, p, reduce):
    """Per head/channel: Σ|w|ᵖ per row (q, k, v, gate, up) or column (o, down), reduced
    over the matrices, summed over head_dim; a GQA group takes its own query heads' q rows
    and o columns (gqa_fold=block)."""
    adapter = adapter_for(model)
    layer = adapter.layers(model)[index]
    g = surgery.geometry(layer, adapter)
    w = {r: adapter.linear(layer, r).weight.detach() for r in ROLES}
    rows = {r: (w[r].abs() ** p).sum(0 if r in ("o", "down") else 1) for r in ROLES}
    rep = g.n_heads // g.n_kv_heads
    q = rows["q"].view(g.n_kv_heads, rep, g.head_dim).sum(1)
    o = rows["o"].view(g.n_kv_heads, rep, g.head_dim).sum(1)
    k, v = rows["k"].view(g.n_kv_heads, g.head_dim), rows["v"].view(g.n_kv_heads, g.head_dim)
    heads = reduce(torch.stack([q, k, v, o])).sum(1)
    channels = reduce(torch.stack([rows["gate"], rows["up"], rows["down"]]))
    return heads, channels


@pytest.mark.parametrize("kind", ["mha", "gqa"])
@pytest.mark.parametrize("importance, p", [("l1", 1), ("l2", 2)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l1_l2_are_weight_magnitudes_without_data(tiny, kind, importance, p, reduction):
    model = tiny(kind)
    adapter = adapter_for(model)
    method = LLMPruner(importance, group_reduction=reduction, gqa_fold="block")
    assert not method.needs_calibration and LLMPruner("element1").needs_calibration
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    targets = plan_layers(geometries, [0.5] * 3, "kv_group", "round", True)
    method.score_model(LayerwiseEngine(model, adapter, None, 4, "cpu"), targets, "kv_group")
    assert all(p.grad is None for p in model.parameters())
    reduce = {"mean": lambda t: t.mean(0), "sum": lambda t: t.sum(0)}[reduction]
    for i in range(3):
        heads, channels = _magnitude_reference(model, i, p, reduce)
        ctx = _layer_ctx(model, targets, i, "kv_group")
        torch.testing.assert_close(method.unit_scores(ctx, {}), heads, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(method.channel_scores(ctx, {}), channels, rtol=1e-5, atol=1e-7)


def test_l2_prunes_without_calibration_and_the_model_generates(tiny):
    model = tiny("gqa")
    targets, infos = prune_uniformly(model, LLMPruner("l2"), 0.5, "kv_group", calibration=None)
    assert [len(info["removed_units"]) for info in infos] == [t.attn_units for t in targets]
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
