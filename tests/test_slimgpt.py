"""SlimGPT (DESIGN §5): the OBS math against least squares and brute force, and the
method end to end on tiny models. Small random matrices in float64; the references are
computed directly (numpy lstsq, explicit inverses, Schur complements), not with obs.py."""

import logging

import numpy as np
import pytest
import torch

from conftest import capture_input, prune_uniformly
from slimexp.errors import SlimexpError
from slimexp.models.adapters import adapter_for
from slimexp.pruning import obs, surgery
from slimexp.pruning.methods.magnitude import Magnitude
from slimexp.pruning.methods.slimgpt import SlimGPT
from slimexp.pruning.units import AttentionUnits, LayerGeometry


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These matrices are tiny: a second intra-op thread only adds spin-waiting, which on a
    shared 2-core box slows the end-to-end cases ~50× (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- references (numpy)


def correlated_inputs(tokens, dim, seed):
    """Tokens × dim inputs with strongly correlated features (random mixing + a common part)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((tokens, dim))
    mixing = rng.standard_normal((dim, dim)) + 0.8 * np.eye(dim)
    return latent @ mixing + rng.standard_normal((tokens, 1)) * 1.5


def hessian_of(x, n_sequences):
    return 2.0 / n_sequences * x.T @ x


def output_error(w_ref, w_new, x):
    return float(((x @ w_ref.T - x @ w_new.T) ** 2).sum())


def lstsq_refit(w, x, kept):
    """The kept columns re-fitted to W·x by least squares (removed columns zero)."""
    fitted = np.zeros_like(w)
    fitted[:, kept] = np.linalg.lstsq(x[:, kept], x @ w.T, rcond=None)[0].T
    return fitted


def weighted_refit(w, hessian, removed):
    """argmin over Ŵ supported on the kept set K of (W − Ŵ) H (W − Ŵ)ᵀ: Ŵ_K = W H_{:K} H_KK⁻¹
    (the least-squares re-fit when H ∝ XᵀX; also valid for a damped H)."""
    kept = [j for j in range(w.shape[1]) if j not in set(removed)]
    fitted = np.zeros_like(w)
    fitted[:, kept] = w @ hessian[:, kept] @ np.linalg.inv(hessian[np.ix_(kept, kept)])
    return fitted


def pruned_hessian(hessian, removed):
    h = hessian.copy()
    h[removed, :] = 0
    h[:, removed] = 0
    h[removed, removed] = 1
    return h


def schur_denominators(block):
    """d_j = B_jj − B_{j,<j} B_{<j,<j}⁻¹ B_{<j,j}: [H⁻¹]_jj after columns < j were removed."""
    out = [block[0, 0]]
    for j in range(1, len(block)):
        out.append(block[j, j] - block[j, :j] @ np.linalg.solve(block[:j, :j], block[:j, j]))
    return np.array(out)


def t(a):
    return torch.tensor(np.array(a), dtype=torch.float64)


def unit_columns_of(units):
    return torch.tensor([units.columns_of(u) for u in range(units.n_units)], dtype=torch.long)


# ---------------------------------------------------------------- accumulation and schedule


def test_hessian_is_the_running_mean_over_sequences():
    x = torch.randn(8, 5, 6, dtype=torch.float64)
    acc = obs.HessianAccumulator(torch.float64)
    for chunk in (x[:3], x[3:4], x[4:]):
        acc.add_batch(chunk)
    flat = x.reshape(-1, 6).numpy()
    np.testing.assert_allclose(acc.hessian.numpy(), 2 / 8 * flat.T @ flat, rtol=1e-12)
    single = obs.HessianAccumulator(torch.float64)
    single.add_batch(x[0])  # a 2-D input is one sequence
    assert single.n_sequences == 1


def test_prepare_fixes_dead_inputs_then_damps_with_the_fixed_mean():
    w = torch.ones(3, 4, dtype=torch.float64)
    h = torch.diag(torch.tensor([2.0, 0.0, 4.0, 6.0], dtype=torch.float64))
    assert obs.prepare(w, h, 0.1) == 1
    mean_after_fix = (2 + 1 + 4 + 6) / 4
    np.testing.assert_allclose(h.diagonal().numpy(), np.array([2, 1, 4, 6]) + 0.1 * mean_after_fix)
    assert (w[:, 1] == 0).all() and (w[:, 0] == 1).all()


def test_dynamic_group_size_follows_the_authors_schedule():
    assert obs.group_sizes(2202, 1024, 64) == [845, 166] + [64] * 18 + [39]
    assert obs.group_sizes(300, 1024, 64) == [64] * 4 + [44]
    assert obs.group_sizes(300, 1024, 64, dynamic=False, fixed_group=128) == [128, 128, 44]
    small = obs.group_sizes(400, 128, 8)  # offset scales with max_group: 64
    assert small[:3] == [128, 52, 8] and sum(small) == 400
    assert obs.group_sizes(0, 1024, 64) == []


# ---------------------------------------------------------------- OBS math vs least squares


def test_one_column_obs_equals_least_squares_refit():
    x = correlated_inputs(200, 12, seed=1)
    w = np.random.default_rng(2).standard_normal((7, 12))
    n_seq = 10
    weight, hessian = t(w), t(hessian_of(x, n_seq))
    result = obs.prune_columns(weight, hessian, [1])
    (removed,) = result.removed
    kept = [j for j in range(12) if j != removed]
    refit = lstsq_refit(w, x, kept)
    np.testing.assert_allclose(weight.numpy(), refit, atol=1e-10)
    rise = output_error(w, refit, x)
    assert rise == pytest.approx(n_seq / 2 * result.errors[0], rel=1e-9)
    # The chosen column is the least-squares best one.
    rises = [output_error(w, lstsq_refit(w, x, [k for k in range(12) if k != j]), x) for j in range(12)]
    assert removed == int(np.argmin(rises))


def test_grouped_cholesky_gives_the_sequential_obs_denominators():
    x = correlated_inputs(150, 12, seed=3)
    h = hessian_of(x, 5)
    hinv = np.linalg.inv(h)
    units = torch.arange(12).view(3, 4)
    grouped = obs.obs_denominators(t(hinv), units, grouped=True).numpy()
    for u, columns in enumerate(units.tolist()):
        # Remove the unit's columns one by one; the denominator of column j is [H_KK⁻¹]_jj.
        expected = []
        for j, column in enumerate(columns):
            kept = [c for c in range(12) if c not in columns[:j]]
            expected.append(np.linalg.inv(h[np.ix_(kept, kept)])[kept.index(column), kept.index(column)])
        np.testing.assert_allclose(grouped[u], expected, rtol=1e-9)
        np.testing.assert_allclose(grouped[u], schur_denominators(hinv[np.ix_(columns, columns)]), rtol=1e-9)
    plain = obs.obs_denominators(t(hinv), units, grouped=False).numpy()
    np.testing.assert_allclose(plain, np.diag(hinv)[units.numpy()])
    assert not np.allclose(plain[:, 1:], grouped[:, 1:], rtol=1e-3)  # diag(H⁻¹) is not the same


def test_pruned_head_costs_the_exact_group_error_and_the_least_squares_optimum():
    x = correlated_inputs(240, 15, seed=4)
    w = np.random.default_rng(5).standard_normal((9, 15))
    n_seq = 12
    h = hessian_of(x, n_seq)
    units = torch.arange(15).view(5, 3)
    weight = t(w)
    result = obs.prune_units(weight, t(h), units, 1, score="authors")
    head = units[result.removed[0]].tolist()
    kept = [c for c in range(15) if c not in head]
    block_inverse = np.linalg.inv(np.linalg.inv(h)[np.ix_(head, head)])
    group_error = sum(row[head] @ block_inverse @ row[head] for row in w)
    rise = output_error(w, weight.numpy(), x)
    assert result.errors[0] == pytest.approx(group_error, rel=1e-9)
    assert rise == pytest.approx(n_seq / 2 * group_error, rel=1e-9)
    refit = lstsq_refit(w, x, kept)
    assert rise == pytest.approx(output_error(w, refit, x), rel=1e-9)
    np.testing.assert_allclose(weight.numpy(), refit, atol=1e-10)
    exact = obs.unit_errors(t(w), t(np.linalg.inv(h)), units, "exact")
    assert float(exact[result.removed[0]]) == pytest.approx(group_error, rel=1e-9)


# ---------------------------------------------------------------- greedy choices vs brute force

GQA_2x4 = LayerGeometry(hidden=8, n_heads=8, n_kv_heads=2, head_dim=3, d_ff=1)
GREEDY_CASES = [  # (id, geometry, policy, count, scale of KV group 0's columns)
    ("mha", LayerGeometry(hidden=8, n_heads=5, n_kv_heads=5, head_dim=4, d_ff=1), "kv_group", 3, 1.0),
    ("gqa-kv_group", LayerGeometry(hidden=8, n_heads=6, n_kv_heads=3, head_dim=3, d_ff=1), "kv_group", 2, 1.0),
    ("gqa-q_head", GQA_2x4, "q_head", 4, 1.0),
    # Group 0's heads all look cheap: without the balance rule all four would come from it.
    ("gqa-q_head-skewed", GQA_2x4, "q_head", 4, 0.05),
]
SCORES = [("authors", True), ("authors", False), ("exact", True)]


def brute_force_unit_score(w, hinv, columns, score, grouped):
    block = hinv[np.ix_(columns, columns)]
    if score == "exact":
        return sum(row[columns] @ np.linalg.inv(block) @ row[columns] for row in w)
    denominators = schur_denominators(block) if grouped else np.diag(block)
    return float((w[:, columns] ** 2 / denominators).sum())


def balanced_candidates(units, removed, count):
    """Written out here rather than taken from AttentionUnits.allowed."""
    g = units.geometry
    if units.per_kv_group:
        return [u for u in range(units.n_units) if u not in removed]
    quota = count // g.n_kv_heads
    return [
        u
        for u in range(units.n_units)
        if u not in removed and sum(r // g.group_size == u // g.group_size for r in removed) < quota
    ]


@pytest.mark.parametrize("score,grouped", SCORES, ids=[f"{s}-{'grouped' if g else 'diag'}" for s, g in SCORES])
@pytest.mark.parametrize("case", GREEDY_CASES, ids=[c[0] for c in GREEDY_CASES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_greedy_choice_is_the_brute_force_best_unit(case, score, grouped, seed):
    _, geometry, policy, count, group0_scale = case
    units = AttentionUnits(geometry, policy)
    d_in = geometry.n_heads * geometry.head_dim
    x = correlated_inputs(6 * d_in, d_in, seed=10 + seed)
    w = np.random.default_rng(20 + seed).standard_normal((geometry.hidden, d_in))
    w[:, : geometry.group_size * geometry.head_dim] *= group0_scale
    h = hessian_of(x, 4)
    damped = h + 0.01 * np.mean(np.diag(h)) * np.eye(d_in)
    weight, hessian = t(w), t(h)
    obs.prepare(weight, hessian, 0.01)
    result = obs.prune_units(
        weight,
        hessian,
        unit_columns_of(units),
        count,
        score=score,
        grouped=grouped,
        candidates=lambda removed: units.allowed(removed, count),
    )
    removed_units, removed_columns = [], []
    for chosen in result.removed:
        w_now = weighted_refit(w, damped, removed_columns)
        hinv = np.linalg.inv(pruned_hessian(damped, removed_columns))
        candidates = balanced_candidates(units, removed_units, count)
        scores = {u: brute_force_unit_score(w_now, hinv, units.columns_of(u), score, grouped) for u in candidates}
        assert chosen == min(scores, key=scores.get)
        removed_units.append(chosen)
        removed_columns += units.columns_of(chosen)
    assert len(result.removed) == count
    if not units.per_kv_group:
        per_group = [sum(u // geometry.group_size == g for u in result.removed) for g in range(geometry.n_kv_heads)]
        assert len(set(per_group)) == 1
    # W after the loop is the re-fit of the kept columns: it depends only on the removed set.
    np.testing.assert_allclose(weight.numpy(), weighted_refit(w, damped, removed_columns), atol=1e-9)


def test_authors_and_exact_scores_disagree_on_some_layers():
    """Shows the brute-force test above can tell the two scores apart."""
    geometry = LayerGeometry(hidden=8, n_heads=6, n_kv_heads=6, head_dim=4, d_ff=1)
    units = AttentionUnits(geometry, "kv_group")
    differ = 0
    for seed in range(12):
        x = correlated_inputs(120, 24, seed=100 + seed)
        w = np.random.default_rng(200 + seed).standard_normal((8, 24))
        hinv = t(np.linalg.inv(hessian_of(x, 4)))
        authors = obs.unit_errors(t(w), hinv, unit_columns_of(units), "authors")
        exact = obs.unit_errors(t(w), hinv, unit_columns_of(units), "exact")
        differ += int(torch.argmin(authors) != torch.argmin(exact))
    assert differ > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_each_ffn_block_holds_the_lowest_one_column_errors(seed):
    x = correlated_inputs(160, 14, seed=30 + seed)
    w = np.random.default_rng(40 + seed).standard_normal((6, 14))
    h = hessian_of(x, 8)
    weight = t(w)
    sizes = [3, 2, 1]
    result = obs.prune_columns(weight, t(h), sizes)
    removed = []
    for size in sizes:
        w_now = weighted_refit(w, h, removed)
        hinv = np.linalg.inv(pruned_hessian(h, removed))
        errors = (w_now**2 / np.diag(hinv)).sum(0)
        remaining = [j for j in range(14) if j not in removed]
        expected = sorted(remaining, key=lambda j: errors[j])[:size]
        block = result.removed[len(removed) : len(removed) + size]
        assert block == expected
        removed += block
    kept = [j for j in range(14) if j not in removed]
    np.testing.assert_allclose(weight.numpy(), lstsq_refit(w, x, kept), atol=1e-9)


def test_dead_inputs_score_zero_and_go_first():
    x = correlated_inputs(100, 8, seed=7)
    x[:, 5] = 0
    w = np.random.default_rng(8).standard_normal((4, 8))
    weight, hessian = t(w), t(hessian_of(x, 5))
    assert obs.prepare(weight, hessian, 0.0) == 1
    assert obs.prune_columns(weight, hessian, [1]).removed == [5]


# ---------------------------------------------------------------- compensation


@pytest.mark.parametrize("seed", range(4))
def test_compensation_never_increases_the_output_error(seed):
    x = correlated_inputs(300, 24, seed=50 + seed)
    w = np.random.default_rng(60 + seed).standard_normal((16, 24))
    h = hessian_of(x, 10)
    units = torch.arange(24).view(6, 4)
    runs = {}
    for compensate in (True, False):
        heads, columns = t(w), t(w)
        head_result = obs.prune_units(heads, t(h), units, 3, compensate=compensate)
        column_result = obs.prune_columns(columns, t(h), [4, 4, 2], compensate=compensate)
        runs[compensate] = (heads.numpy(), head_result, columns.numpy(), column_result)
    heads, head_result, columns, column_result = runs[True]
    heads_off, head_off, columns_off, column_off = runs[False]
    assert output_error(w, heads, x) <= output_error(w, heads_off, x)
    assert output_error(w, columns, x) <= output_error(w, columns_off, x)
    # Against plain zeroing of the very same removed set, too.
    zeroed = w.copy()
    zeroed[:, units[head_result.removed].flatten().numpy()] = 0
    assert output_error(w, heads, x) <= output_error(w, zeroed, x)
    zeroed = w.copy()
    zeroed[:, column_result.removed] = 0
    assert output_error(w, columns, x) <= output_error(w, zeroed, x)
    # Without compensation the kept columns are untouched.
    kept = [j for j in range(24) if j not in column_off.removed]
    np.testing.assert_array_equal(columns_off[:, kept], w[:, kept])


# ---------------------------------------------------------------- numerics


def test_singular_hessian_retries_with_damping_and_warns(caplog):
    x = np.array([[1, 1, 2, 0], [0, 0, 1, 1], [2, 2, 0, 1]], dtype=np.float64)  # column 1 = column 0
    singular = t(x.T @ x)
    original_diagonal = singular.diagonal().clone()
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(singular)
    with caplog.at_level(logging.WARNING, logger="slimexp.pruning.obs"):
        hinv = obs.inverse_hessian(singular)
    assert "Cholesky of the Hessian failed" in caplog.text
    assert torch.isfinite(hinv).all()
    assert (singular.diagonal() > original_diagonal).all()  # the damping stays in H
    caplog.clear()
    weight = t(np.random.default_rng(0).standard_normal((3, 4)))
    with caplog.at_level(logging.WARNING, logger="slimexp.pruning.obs"):
        result = obs.prune_columns(weight, t(x.T @ x), [1, 1])
    assert "retried with damping" in caplog.text and len(result.removed) == 2
    assert torch.isfinite(weight).all()


def test_batched_retry_damps_only_the_failing_blocks():
    blocks = torch.stack([torch.eye(3, dtype=torch.float64) * 2, torch.ones(3, 3, dtype=torch.float64)])
    factor, added = obs.cholesky_with_retry(blocks, "blocks")
    assert added[0] == 0 and added[1] > 0
    torch.testing.assert_close(factor[0], torch.eye(3, dtype=torch.float64) * 2**0.5)


def test_non_finite_hessian_is_a_clear_error():
    h = torch.eye(3, dtype=torch.float64)
    h[0, 1] = float("nan")
    with pytest.raises(SlimexpError, match="NaN"):
        obs.prepare(torch.ones(2, 3, dtype=torch.float64), h, 0.01)


# ---------------------------------------------------------------- the method end to end


def _layer_errors(pruned, dense, calibration):
    """Per layer: ‖dense_layer(x) − pruned_layer(x)‖² on the inputs x that the pruned model
    feeds that layer."""
    adapter = adapter_for(pruned)
    captured = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, args, kwargs: captured.append((args, kwargs)), with_kwargs=True)
        for layer in adapter.layers(pruned)
    ]
    with torch.no_grad():
        pruned(calibration, use_cache=False)
    for hook in hooks:
        hook.remove()
    errors = []
    with torch.no_grad():
        for (args, kwargs), p_layer, d_layer in zip(captured, adapter.layers(pruned), adapter.layers(dense)):
            out_p, out_d = p_layer(*args, **kwargs), d_layer(*args, **kwargs)
            out_p = out_p[0] if isinstance(out_p, tuple) else out_p
            out_d = out_d[0] if isinstance(out_d, tuple) else out_d
            errors.append(float(((out_p - out_d) ** 2).sum()))
    return errors


@pytest.mark.parametrize("kind", ["mha", "gqa", "qwen2"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_slimgpt_meets_the_plan_runs_and_beats_magnitude(tiny, kind, policy, ratio):
    build = (lambda: tiny("gqa", bias=True)) if kind == "qwen2" else (lambda: tiny(kind))
    calibration = torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(0))
    errors = {}
    for name, method in (("slimgpt", SlimGPT(max_group=16, min_group=4)), ("magnitude", Magnitude())):
        model = build()
        adapter = adapter_for(model)
        units = AttentionUnits(surgery.geometry(adapter.layers(model)[0], adapter), policy)
        targets, infos = prune_uniformly(model, method, ratio, policy, calibration)
        for target, info, layer in zip(targets, infos, adapter.layers(model)):
            g = surgery.geometry(layer, adapter)
            assert g.d_ff == 80 - target.ffn_channels
            assert g.n_heads == units.geometry.n_heads - target.attn_units * len(units.heads_of(0))
            assert len(info.get("removed_units", [])) == target.attn_units
        errors[name] = _layer_errors(model, build(), calibration)
        model.generate(torch.randint(0, 64, (1, 5)), max_new_tokens=3, do_sample=False, pad_token_id=0)
        if name == "slimgpt":
            assert infos[0]["ffn_group_sizes"] and sum(infos[0]["ffn_group_sizes"]) == targets[0].ffn_channels
    assert all(s < m for s, m in zip(errors["slimgpt"], errors["magnitude"])), errors


def test_method_settings_are_validated_and_described():
    method = SlimGPT(percdamp=0.0, head_score="exact", dynamic_group=False, dtype="float64")
    described = method.describe()
    assert described["name"] == "slimgpt" and described["head_score"] == "exact"
    assert set(described) >= {
        "percdamp",
        "compensate",
        "grouped_cholesky",
        "dynamic_group",
        "max_group",
        "min_group",
        "fixed_group",
        "dtype",
    }
    assert method.order == "sequential"
    with pytest.raises(SlimexpError, match="head_score must be one of"):
        SlimGPT(head_score="best")
    with pytest.raises(SlimexpError, match="min_group <= max_group"):
        SlimGPT(min_group=2048)


def test_config_instantiates_slimgpt_and_its_schedule():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from conftest import REPO
    from slimexp.checks import build_method
    from slimexp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(
            compose("config", overrides=["method=slimgpt", "schedule=log_increase"]), resolve=True
        )
    method = build_method(cfg["method"])
    assert isinstance(method, SlimGPT) and method.describe()["percdamp"] == 0.01
    schedule = instantiate({k: v for k, v in cfg["schedule"].items() if k != "name"})
    assert schedule.name == "log_increase" and schedule.r_min == 0.0625 and schedule.r_max is None


# ------------------------------------------------------- SlimLLM's regression, switched on


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_regression_instead_of_obs_is_polyfit_on_the_kept_columns(tiny, policy):
    """compensate=false, regression=true: the same heads as selection alone, and o_proj row k
    = a_k·W[k, kept] with bias b_k from numpy.polyfit(kept output_k, dense output_k)."""
    calibration = torch.randint(0, 64, (6, 16))
    dense = tiny("gqa")
    layer = dense.model.layers[0]
    x = capture_input(dense, layer.self_attn.o_proj, calibration).double().numpy()
    w = layer.self_attn.o_proj.weight.detach().double().numpy()
    selection_only, fitted = tiny("gqa"), tiny("gqa")
    _, plain = prune_uniformly(selection_only, SlimGPT(compensate=False), 0.5, policy, calibration, absorb=False)
    _, infos = prune_uniformly(
        fitted, SlimGPT(compensate=False, regression=True), 0.5, policy, calibration, absorb=False
    )
    assert infos[0]["removed_units"] == plain[0]["removed_units"]
    units = AttentionUnits(surgery.geometry(layer, adapter_for(dense)), policy)
    gone = {c for u in infos[0]["removed_units"] for c in units.columns_of(u)}
    kept = [c for c in range(w.shape[1]) if c not in gone]
    y, y_hat = x @ w.T, x[:, kept] @ w[:, kept].T
    fits = np.array([np.polyfit(y_hat[:, k], y[:, k], 1) for k in range(y.shape[1])])
    o_new = fitted.model.layers[0].self_attn.o_proj
    np.testing.assert_allclose(o_new.weight.detach().numpy(), fits[:, :1] * w[:, kept], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o_new.bias.detach().numpy(), fits[:, 1], rtol=1e-5, atol=1e-6)
    assert "ffn_regression_mean_a" in infos[0] and "attn_regression_mean_a" in infos[0]


def test_regression_on_top_of_obs_never_increases_the_output_error(tiny):
    """A fit with slope 1 and intercept 0 is the plain OBS result, so least squares over the
    same tokens can only lower layer 0's o_proj output error (layer 0's kept heads see the
    dense inputs, so both runs cut the same heads and read the same kept activations)."""
    calibration = torch.randint(0, 64, (6, 16))
    dense = tiny("gqa")
    o_dense = dense.model.layers[0].self_attn.o_proj
    with torch.no_grad():
        target = o_dense(capture_input(dense, o_dense, calibration))
    errors, removed = [], []
    for regression in (False, True):
        model = tiny("gqa")
        _, infos = prune_uniformly(model, SlimGPT(regression=regression), 0.5, "kv_group", calibration, absorb=False)
        o_proj = model.model.layers[0].self_attn.o_proj
        with torch.no_grad():
            out = o_proj(capture_input(model, o_proj, calibration))
        errors.append(float((out.double() - target.double()).pow(2).sum()))
        removed.append(infos[0]["removed_units"])
    assert removed[0] == removed[1] and removed[0]
    assert errors[1] <= errors[0] * (1 + 1e-6)
    assert errors[1] < errors[0]  # and on these random weights it does lower it
