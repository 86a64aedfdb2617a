"""FLAP against direct numpy computations on small matrices and tiny models."""

import numpy as np
import pytest
import torch

from conftest import prune_uniformly
from slimexp.models.adapters import adapter_for
from slimexp.pruning import surgery
from slimexp.pruning.methods.flap import FLAP, Fluctuation, global_threshold, standardise
from slimexp.pruning.plan import plan_layers
from slimexp.pruning.units import AttentionUnits


def authors_fluctuation(x: np.ndarray) -> np.ndarray:
    """DESIGN §5 literally: F_j = 1/(N−1)·Σ_{k=2..N} (k−1)/k·Σ_{t∈seq k} (x_tj − m_kj)²."""
    n = x.shape[0]
    total = np.zeros(x.shape[-1])
    for k in range(2, n + 1):
        m_k = x[:k].reshape(-1, x.shape[-1]).mean(0)
        total += (k - 1) / k * ((x[k - 1] - m_k) ** 2).sum(0)
    return total / (n - 1)


@pytest.mark.parametrize("chunks", [(7,), (1, 1, 5), (3, 4)])
def test_authors_fluctuation_and_mean_equal_numpy(chunks):
    x = torch.randn(7, 5, 4, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.1, 2.0]) + 0.5
    acc = Fluctuation("authors")
    start = 0
    for size in chunks:
        acc.add_batch(x[start : start + size].float())
        start += size
    np.testing.assert_allclose(acc.value().numpy(), authors_fluctuation(x.float().double().numpy()), rtol=1e-5)
    np.testing.assert_allclose(acc.mean.numpy(), x.float().double().numpy().reshape(-1, 4).mean(0), rtol=1e-6)
    np.testing.assert_allclose(
        acc.norm().numpy(), np.sqrt((x.float().double().numpy() ** 2).sum((0, 1)) / 7), rtol=1e-5
    )


def test_variance_fluctuation_is_the_sample_variance_over_tokens():
    x = torch.randn(6, 9, 3) * 2 + 1
    acc = Fluctuation("variance")
    acc.add_batch(x[:2])
    acc.add_batch(x[2:])
    np.testing.assert_allclose(acc.value().numpy(), np.var(x.numpy().reshape(-1, 3), axis=0, ddof=1), rtol=1e-5)


def test_one_sequence_has_no_authors_fluctuation():
    acc = Fluctuation("authors")
    acc.add_batch(torch.randn(1, 8, 3))
    assert torch.equal(acc.value(), torch.zeros(3))


def test_global_threshold_equals_the_brute_force_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 40))
        scores = torch.tensor(rng.normal(size=n))
        weights = torch.tensor(rng.choice([1, 1, 1, 170], size=n))
        ratio = float(rng.uniform(0.05, 0.9))
        order = sorted(range(n), key=lambda i: -scores[i].item())
        target = (1 - ratio) * weights.sum().item()
        gaps = [abs(sum(weights[order[j]].item() for j in range(k + 1)) - target) for k in range(n)]
        k_star = gaps.index(min(gaps))  # the first argmin
        expected = scores[order[k_star]]
        assert global_threshold(scores, weights, ratio) == expected
        kept = scores > expected
        assert not kept[order[k_star]] and kept[[order[j] for j in range(k_star)]].all()


def _dense_module_inputs(model, adapter, calibration):
    """o_proj / down_proj inputs of every layer of the dense model (tokens × width)."""
    inputs = {}
    handles = []
    for index, layer in enumerate(adapter.layers(model)):
        for role in ("o", "down"):
            hook = (lambda key: lambda m, args: inputs.setdefault(key, []).append(args[0].detach()))((index, role))
            handles.append(adapter.linear(layer, role).register_forward_pre_hook(hook))
    with torch.no_grad():
        model(calibration)
    for handle in handles:
        handle.remove()
    return {key: torch.cat(v).double().numpy() for key, v in inputs.items()}


def _reference_al_am(model, adapter, inputs, ratio, policy):
    """AL-AM from DESIGN §5 in numpy: removed units and channels per layer."""
    unit_z, channel_z, unit_w = [], [], []
    for index, layer in enumerate(adapter.layers(model)):
        g = surgery.geometry(layer, adapter)
        units = AttentionUnits(g, policy)
        metric = {}
        for role in ("o", "down"):
            x = inputs[(index, role)]  # (N, T, width)
            w = adapter.linear(layer, role).weight.detach().double().numpy()
            s = authors_fluctuation(x) * (w**2).sum(0)
            metric[role] = s**2 if role == "o" else s
        z = {r: (v - v.mean()) / v.std(ddof=1) for r, v in metric.items()}
        unit_z.append(np.array([z["o"][units.columns_of(u)].mean() for u in range(units.n_units)]))
        channel_z.append(z["down"])
        unit_w.append(units.unit_params // g.channel_params)
    scores = np.concatenate([np.concatenate([u, c]) for u, c in zip(unit_z, channel_z)])
    weights = np.concatenate(
        [np.concatenate([np.full(len(u), w), np.ones(len(c))]) for u, c, w in zip(unit_z, channel_z, unit_w)]
    )
    order = np.argsort(-scores, kind="stable")
    k_star = np.argmin(np.abs(np.cumsum(weights[order]) - (1 - ratio) * weights.sum()))
    threshold = scores[order[k_star]]
    return [
        (set(np.flatnonzero(u <= threshold)), set(np.flatnonzero(c <= threshold))) for u, c in zip(unit_z, channel_z)
    ]


def _run_flap(model, method, ratio, policy, calibration, batch_size=2, rounding="round", absorb=True):
    return prune_uniformly(model, method, ratio, policy, calibration, batch_size, absorb, rounding)[1]


def _kept_columns(dense_weight: torch.Tensor, pruned_weight: torch.Tensor) -> list[int]:
    """Which dense columns survive (pruned columns are exact copies of dense ones)."""
    kept, j = [], 0
    for i in range(dense_weight.shape[1]):
        if j < pruned_weight.shape[1] and torch.equal(dense_weight[:, i], pruned_weight[:, j]):
            kept.append(i)
            j += 1
    assert j == pruned_weight.shape[1]
    return kept


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_al_am_removes_what_the_numpy_reference_removes(tiny, kind):
    model = tiny(kind, layers=3)
    dense = tiny(kind, layers=3)
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(1))
    inputs = _dense_module_inputs(dense, adapter, calibration)
    inputs = {k: v.reshape(6, 12, -1) for k, v in inputs.items()}
    expected = _reference_al_am(dense, adapter, inputs, 0.4, "kv_group")
    infos = _run_flap(model, FLAP(mean_dtype="float32"), 0.4, "kv_group", calibration)
    for index, (units, channels) in enumerate(expected):
        assert set(infos[index].get("removed_units", [])) == units
        dense_down = adapter.linear(adapter.layers(dense)[index], "down").weight
        pruned_down = adapter.linear(adapter.layers(model)[index], "down").weight
        kept = _kept_columns(dense_down, pruned_down)
        assert set(range(dense_down.shape[1])) - set(kept) == channels
        assert infos[index]["ffn_channels"] == len(channels)
    assert sum(len(c) for _, c in expected) > 0


@pytest.mark.parametrize("kind", ["mha", "gqa"])
@pytest.mark.parametrize("structure", ["AL-AM", "UL-UM"])
def test_bias_compensation_zeroes_the_mean_output_error_on_calibration_tokens(tiny, kind, structure):
    """With the dense module inputs X: mean_t(X·Wᵀ) = mean_t(X[:, kept]·W_keptᵀ + b) for o_proj
    and down_proj of every layer, and b = W[:, removed]·m[removed] (numpy)."""
    model, dense = tiny(kind), tiny(kind)
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (5, 10), generator=torch.Generator().manual_seed(2))
    inputs = _dense_module_inputs(dense, adapter, calibration)
    _run_flap(model, FLAP(structure=structure, mean_dtype="float32"), 0.5, "kv_group", calibration)
    checked = 0
    for index in range(len(adapter.layers(model))):
        for role in ("o", "down"):
            w_dense = adapter.linear(adapter.layers(dense)[index], role).weight.detach()
            pruned = adapter.linear(adapter.layers(model)[index], role)
            kept = _kept_columns(w_dense, pruned.weight.detach())
            removed = sorted(set(range(w_dense.shape[1])) - set(kept))
            if not removed:
                continue
            x = inputs[(index, role)].reshape(-1, w_dense.shape[1])
            w = w_dense.double().numpy()
            bias = pruned.bias.detach().double().numpy()
            np.testing.assert_allclose(bias, w[:, removed] @ x[:, removed].mean(0), atol=1e-5)
            error = x @ w.T - (x[:, kept] @ pruned.weight.detach().double().numpy().T + bias)
            np.testing.assert_allclose(error.mean(0), 0, atol=1e-5)
            assert np.abs(error).max() > 1e-3  # the error itself is not zero, only its mean
            checked += 1
    assert checked >= 2


def test_without_compensation_no_bias_is_added(tiny):
    model = tiny("gqa")
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(3))
    _run_flap(model, FLAP(bias_compensation=False), 0.5, "kv_group", calibration)
    for layer in adapter.layers(model):
        assert adapter.linear(layer, "o").bias is None and adapter.linear(layer, "down").bias is None


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_ul_um_uses_the_plan_counts_with_raw_summed_scores(tiny, policy):
    model, dense = tiny("gqa"), tiny("gqa")
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(4))
    inputs = _dense_module_inputs(dense, adapter, calibration)
    infos = _run_flap(model, FLAP(structure="UL-UM"), 0.5, policy, calibration, rounding="floor", absorb=False)
    for index, layer in enumerate(adapter.layers(dense)):
        g = surgery.geometry(layer, adapter)
        units = AttentionUnits(g, policy)
        x = inputs[(index, "o")].reshape(4, 10, -1)
        s = (authors_fluctuation(x) * (adapter.linear(layer, "o").weight.detach().double().numpy() ** 2).sum(0)) ** 2
        unit_scores = torch.tensor([s[units.columns_of(u)].sum() for u in range(units.n_units)])
        count = plan_layers([g], [0.5], policy, "floor", False)[0].attn_units
        assert infos[index]["removed_units"] == units.lowest(unit_scores, count)
        assert infos[index]["ffn_channels"] == int(0.5 * g.d_ff)


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("metric", ["WIFV", "IFV", "WIFN"])
def test_flap_prunes_gqa_and_the_model_still_generates(tiny, policy, metric):
    model = tiny("gqa")
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(5))
    dense_params = surgery.decoder_params(model, adapter)
    infos = _run_flap(model, FLAP(metric=metric), 0.5, policy, calibration)
    assert surgery.decoder_params(model, adapter) < dense_params
    for info in infos:  # kept query heads still share the KV heads evenly
        assert info["n_kv_heads"] == 0 or info["n_heads"] % info["n_kv_heads"] == 0
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_a_layer_emptied_by_the_global_pool_still_runs(tiny):
    """No per-layer minimum: at a high ratio some layer loses every head or channel."""
    model = tiny("mha", layers=4)
    calibration = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(6))
    infos = _run_flap(model, FLAP(), 0.9, "kv_group", calibration)
    assert any(info["n_heads"] == 0 or info["d_ff"] == 0 for info in infos)
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_standardise_uses_bessels_correction():
    s = torch.tensor([1.0, 2.0, 4.0, 8.0])
    expected = (s.numpy() - s.numpy().mean()) / s.numpy().std(ddof=1)
    np.testing.assert_allclose(standardise(s).numpy(), expected, rtol=1e-6)


def test_authors_bias_uses_the_mean_rounded_to_fp16():
    weight = torch.randn(5, 8)
    mean = torch.randn(8) * 3 + 0.3333
    columns = [1, 4, 6]
    got = FLAP(mean_dtype="float16").compensation(weight, mean, columns)
    rounded = mean.numpy().astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(got.numpy(), weight.double().numpy()[:, columns] @ rounded[columns], rtol=1e-5)
    exact = FLAP(mean_dtype="float32").compensation(weight, mean, columns)
    assert not torch.allclose(got, exact, rtol=0, atol=1e-6)
