"""LoRAPrune: the LoRA-gradient importance, the progressive schedule, the pipeline."""

import pytest
import torch

import slimexp
from conftest import build_tiny, config_for, prune_uniformly
from slimexp.errors import SlimexpError
from slimexp.pruning.methods.loraprune import (
    LoRAPrune,
    element_importance,
    group_scores,
    importance_per_index,
    schedule_fraction,
    scheduled_count,
)


def _lora_loss_grads(w, a, b, x, scaling):
    """∂L/∂A, ∂L/∂B for L = ½‖(W + s·B·A)·x‖² (autograd, A and B leaves)."""
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    y = (w + scaling * b @ a) @ x
    (0.5 * y.pow(2).sum()).backward()
    return a.grad, b.grad


def test_importance_of_a_scalar_adapter_by_hand():
    # W = 2, A = 0.5, B = 3, s = 2, x = 1: y = 2 + 2·1.5 = 5, ∂L/∂y = 5,
    # ∂L/∂B = s·A·x·5 = 5, ∂L/∂A = s·B·x·5 = 30, Ĝ = 5·0.5 + 3·30 − 5·30 = −57.5,
    # W + s·B·A = 5, importance |−57.5 · 5| = 287.5.
    w, a, b, x = torch.tensor([[2.0]]), torch.tensor([[0.5]]), torch.tensor([[3.0]]), torch.tensor([[1.0]])
    grad_a, grad_b = _lora_loss_grads(w, a, b, x, 2.0)
    assert (grad_a.item(), grad_b.item()) == (30.0, 5.0)
    assert element_importance(w, a, b, grad_a, grad_b, 2.0).item() == pytest.approx(287.5)


def test_importance_equals_the_formula_on_small_matrices():
    torch.manual_seed(0)
    w, a, b, x, s = torch.randn(4, 3), torch.randn(2, 3), torch.randn(4, 2), torch.randn(3, 5), 2.0
    grad_a, grad_b = _lora_loss_grads(w, a, b, x, s)
    m = ((w + s * b @ a) @ x) @ x.T  # ∂L/∂(ΔW) by hand
    assert torch.allclose(grad_b, s * m @ a.T, atol=1e-5) and torch.allclose(grad_a, s * b.T @ m, atol=1e-5)
    by_hand = torch.zeros(4, 3)
    for i in range(4):
        for j in range(3):
            g = sum(grad_b[i, k] * a[k, j] + b[i, k] * grad_a[k, j] for k in range(2))
            g -= sum(grad_b[i, k] * grad_a[k, j] for k in range(2))
            by_hand[i, j] = abs(g * (w[i, j] + s * sum(b[i, k] * a[k, j] for k in range(2))))
    assert torch.allclose(element_importance(w, a, b, grad_a, grad_b, s), by_hand, atol=1e-5)


def test_group_scores_sum_rows_or_columns_per_head_and_normalise():
    imp = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0], [2.0, 2.0]])
    rows = group_scores(imp.sum(1), 2)  # rows 3, 7, 1, 4 → heads 10, 5
    assert torch.allclose(rows, torch.tensor([10.0, 5.0]) / (125**0.5 + 1e-8))
    cols = group_scores(imp.sum(0), 1)  # columns 6, 9
    assert torch.allclose(cols, torch.tensor([6.0, 9.0]) / (117**0.5 + 1e-8))


@pytest.mark.parametrize("role", ["q", "down"])
def test_importance_per_index_in_row_blocks_equals_the_whole_matrix(role):
    torch.manual_seed(1)
    w, a, b, x, s = torch.randn(10, 6), torch.randn(3, 6), torch.randn(10, 3), torch.randn(6, 4), 2.0
    grad_a, grad_b = _lora_loss_grads(w, a, b, x, s)
    whole = element_importance(w, a, b, grad_a, grad_b, s).sum(0 if role == "down" else 1)
    for rows in (1, 3, 10, 64):
        blocked = importance_per_index(w, a, b, grad_a, grad_b, s, role, rows=rows)
        assert torch.allclose(blocked, whole, rtol=1e-6, atol=1e-6)


def test_schedule_is_the_authors_cubic_and_monotone():
    total = 100
    values = [schedule_fraction(t, total, 0.1, 0.1) for t in range(total)]
    assert values[:11] == [0.0] * 11 and values[-9:] == [1.0] * 9
    assert values[50] == pytest.approx(1 - (1 - 40 / 80) ** 3)
    assert all(x <= y for x, y in zip(values, values[1:]))
    assert scheduled_count(None, 40, 0.5) == 20 and scheduled_count(None, 7, 0.99) == 6


class _Recording(LoRAPrune):
    """Keeps the masks after every training step."""

    def _maybe_prune(self, step, total):
        super()._maybe_prune(step, total)
        self.history = getattr(self, "history", [])
        self.history.append({i: (s.attn_mask.clone(), s.ffn_mask.clone()) for i, s in self.state.items()})


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_progressive_masks_grow_monotonically_to_the_planned_counts(policy):
    model = build_tiny("gqa")
    method = _Recording(batch_size=4, micro_batch_size=2, max_steps=12, prune_freq=1)
    targets, layers = prune_uniformly(model, method, 0.5, policy, calibration=torch.randint(0, 64, (8, 16)))
    history = method.history
    assert len(history) == 12
    for before, after in zip(history, history[1:]):
        for i in before:
            for old, new in zip(before[i], after[i]):
                assert bool((new | old).eq(new).all())  # masked once, masked for good
    channels = {i: [int(h[i][1].sum()) for h in history] for i in history[0]}
    assert all(c[0] == 0 and len(set(c)) > 3 for c in channels.values())  # several steps, from nothing
    for t, info in zip(targets, layers):
        attn, ffn = method.state[t.layer].attn_mask, method.state[t.layer].ffn_mask
        assert (int(attn.sum()), int(ffn.sum())) == (t.attn_units, t.ffn_channels)
        assert info["removed_units"] == attn.nonzero().flatten().tolist()  # the engine cut the masked ones
        assert info["removed_channels"] == t.ffn_channels
    assert all(p.grad is None for p in model.parameters())


def test_only_the_adapters_get_gradients_and_discard_leaves_the_kept_weights():
    dense = build_tiny("mha")
    model = build_tiny("mha")
    method = LoRAPrune(batch_size=4, micro_batch_size=4, max_steps=4, prune_freq=1, lr=1e-2, adapters="discard")
    prune_uniformly(model, method, 0.25, "kv_group", calibration=torch.randint(0, 64, (8, 16)))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    kept = ~method.state[0].ffn_mask
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, dense.model.layers[0].mlp.up_proj.weight[kept])


@pytest.mark.parametrize(
    "setting,value",
    [("adapters", "keep"), ("lora_r", 0), ("ema", 1.5), ("max_steps", 0), ("warmup_iters", 0.6)],
)
def test_bad_settings_are_one_line_errors(setting, value):
    kwargs = {setting: value}
    if setting == "warmup_iters":
        kwargs["cooldown_iters"] = 0.5
    with pytest.raises(SlimexpError) as info:
        LoRAPrune(**kwargs)
    assert "\n" not in str(info.value) and setting in str(info.value)


def test_pipeline_hits_the_ratio_and_the_saved_model_reloads_with_the_same_logits(tmp_path, monkeypatch):
    import slimexp.pipeline as pipeline
    from slimexp.pipeline import run

    ids = torch.randint(0, 64, (1, 12))
    seen = {}
    original = pipeline.save_pruned

    def save_and_remember(model, path, *args, **kwargs):
        with torch.no_grad():
            seen["logits"] = model(ids).logits
        return original(model, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "save_pruned", save_and_remember)
    config = config_for(
        tmp_path, "recipe=loraprune/paper", "prune.ratio=0.3", "scale=cpu", "results.save_model=true",
        "calib.n_samples=8", "calib.seqlen=32", "eval.ppl.datasets=[wikitext2]", "scale.prune_train_max_steps=4",
    )  # fmt: skip
    record = run(config)
    assert record["status"] == "done"
    method = record["config"]["method"]
    assert (method["max_steps"], method["batch_size"], method["prune_freq"], method["adapters"]) == (4, 4, 1, "merge")
    assert abs(record["metrics"]["params/achieved_ratio"] - 0.3) <= 0.05
    reloaded = slimexp.load_pruned(record["model_path"])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, seen["logits"])


def _composed(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from slimexp.config import register_configs
    from slimexp.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


@pytest.mark.slow
def test_smollm2_at_20_and_50_percent_beats_random_and_reloads(tmp_path, monkeypatch):
    """scale=cpu (C4 128 × 128, 16 steps of 4 sequences): the ratio, perplexity below
    method=random at the same ratio on WikiText-2 and PTB (first 32 windows), exact reload."""
    import time

    import slimexp.pipeline as pipeline
    from slimexp.models.loader import load_tokenizer, model_config_by_name

    ids = load_tokenizer(model_config_by_name("smollm2-135m"))("Pruning removes heads", return_tensors="pt")
    ids, seen, original = ids["input_ids"], {}, pipeline.save_pruned

    def save_and_remember(model, path, *args, **kwargs):
        with torch.no_grad():
            seen["logits"] = model(ids).logits
        return original(model, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "save_pruned", save_and_remember)
    common = [
        f"results.dir={tmp_path}",
        "model=smollm2-135m",
        "scale=cpu",
        "eval.ppl.max_windows=32",
        "eval.ppl.datasets=[wikitext2,ptb]",
    ]
    for ratio in (0.2, 0.5):
        start = time.time()
        record = pipeline.run(
            _composed(*common, "recipe=loraprune/paper", f"prune.ratio={ratio}", "results.save_model=true")
        )
        seconds = time.time() - start
        random = pipeline.run(_composed(*common, "recipe=random/paper", f"prune.ratio={ratio}"))
        ours, theirs = record["metrics"], random["metrics"]
        print(
            f"SmolLM2 {ratio:.0%}: achieved {ours['params/achieved_ratio']:.4f}, {seconds:.0f} s; loraprune "
            f"wikitext2 {ours['ppl/wikitext2']:.2f} ptb {ours['ppl/ptb']:.2f}; random "
            f"wikitext2 {theirs['ppl/wikitext2']:.2f} ptb {theirs['ppl/ptb']:.2f}"
        )
        assert abs(ours["params/achieved_ratio"] - ratio) <= 0.015
        assert ours["ppl/wikitext2"] < theirs["ppl/wikitext2"] and ours["ppl/ptb"] < theirs["ppl/ptb"]
        with torch.no_grad():
            assert torch.equal(slimexp.load_pruned(record["model_path"])(ids).logits, seen["logits"])
