"""Every option of every config group and every experiment file composes; typos fail."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from slimexp.catalog import experiment_names, resolved_points
from slimexp.config import register_configs
from slimexp.pipeline import resolve_config, validate_config
from slimexp.tracking.store import run_key

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["model", "method", "schedule", "calib", "data", "eval", "logger", "scale", "recipe", "variant"]


def _options(group):
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=False)


CASES = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_group_option_composes_and_resolves(group, option):
    cfg = _compose([f"{group}={option}"])
    config = resolve_config(OmegaConf.to_container(cfg, resolve=True))
    if group != "data":
        validate_config(config)
    if group == "model":
        assert cfg.model.name == option


EXPERIMENTS = [str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml")]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_experiment_composes_at_both_scales(experiment, scale):
    cfg = _compose([f"experiment={experiment}", f"scale={scale}"])
    assert cfg.experiment_name
    assert cfg.report.rows and cfg.report.metrics
    validate_config(resolve_config(OmegaConf.to_container(cfg, resolve=True)))


def test_there_is_something_to_compose():
    assert len(CASES) > 15 and "smoke" in EXPERIMENTS


@pytest.mark.parametrize("override", ["prune.ratoi=0.2", "prune.ratio=abc", "calib.n_samples=many"])
def test_typos_and_wrong_types_fail_at_compose_time(override):
    with pytest.raises(ConfigCompositionException):
        _compose([override])


def test_scale_cpu_substitutes_paper_models_and_caps():
    config = resolve_config(OmegaConf.to_container(_compose(["model=llama-7b", "calib.n_samples=256", "calib.seqlen=2048"]), resolve=True))
    assert config["model"]["name"] == "smollm2-135m" and config["model"]["substitutes_for"] == "llama-7b"
    assert (config["calib"]["n_samples"], config["calib"]["seqlen"]) == (128, 128)
    assert config["eval"]["ppl"]["max_windows"] == 128
    paper = resolve_config(OmegaConf.to_container(_compose(["model=llama-7b", "scale=paper"]), resolve=True))
    assert paper["model"]["hf_id"] == "huggyllama/llama-7b" and paper["eval"]["ppl"]["max_windows"] is None


def test_dense_runs_share_one_key_across_ratios():

    keys = {run_key(resolve_config(OmegaConf.to_container(_compose(["method=dense", f"prune.ratio={r}"]), resolve=True))) for r in (0.2, 0.5)}
    assert len(keys) == 1
    pruned = {run_key(resolve_config(OmegaConf.to_container(_compose(["method=magnitude", f"prune.ratio={r}"]), resolve=True))) for r in (0.2, 0.5)}
    assert len(pruned) == 2


def test_variant_and_recipe_rows_override_the_experiment():
    full = _compose(["experiment=slimllm/table4_ablation", "recipe=slimllm/ratio50", "variant=slimllm/full"])
    uniform = _compose(["experiment=slimllm/table4_ablation", "recipe=slimllm/ratio50", "variant=slimllm/uniform_ratio"])
    assert (full.schedule.alpha, full.schedule.n_pruned_frac, full.prune.ratio) == (7.0, 0.9375, 0.5)
    assert (uniform.schedule.alpha, uniform.schedule.n_pruned_frac, uniform.variant) == (0.0, 1.0, "uniform_ratio")
    no_greedy = _compose(["method=slimllm", "variant=slimllm/no_greedy_search"])
    assert no_greedy.method.greedy_search is False and no_greedy.variant == "no_greedy_search"


def test_dense_ignores_recipe_and_variant():
    from slimexp.tracking.store import run_key

    plain = resolve_config(OmegaConf.to_container(_compose(["method=dense"]), resolve=True))
    labelled = resolve_config(OmegaConf.to_container(
        _compose(["method=dense", "recipe=slimllm/ratio50", "variant=slimllm/full"]), resolve=True))
    assert run_key(plain) == run_key(labelled)


def test_slimllm_paper_recipe_pairs_alpha_with_the_ratio_like_the_fixed_recipes():
    for ratio, fixed in ((0.2, "slimllm/ratio20"), (0.5, "slimllm/ratio50")):
        swept = _compose(["recipe=slimllm/paper", f"prune.ratio={ratio}"])
        pinned = _compose(["method=slimllm", "schedule=cosine_softmax", "calib=bookcorpus", f"recipe={fixed}"])
        for key in ("alpha", "n_pruned_frac"):
            assert swept.schedule[key] == pinned.schedule[key]
        assert swept.method.name == "slimllm" and swept.calib.dataset == "bookcorpus"
    with pytest.raises(Exception, match="no published setting for prune.ratio=0.33"):
        OmegaConf.to_container(_compose(["recipe=slimllm/paper", "prune.ratio=0.33"]), resolve=True)


def test_switched_off_features_leave_the_run_key_of_older_records_unchanged():
    """Records made before zero-shot, latency and LoRA existed had none of their keys (and
    finetune null): the same run must hash the same now, and switching one on must not."""
    import copy

    config = resolve_config(OmegaConf.to_container(_compose(["method=magnitude"]), resolve=True))
    before_features = copy.deepcopy(config)
    for key in ("zeroshot", "latency"):
        before_features["eval"].pop(key)
    before_features["finetune"] = None
    assert run_key(config) == run_key(before_features)
    for overrides in (["eval=full"], ["eval=latency"], ["finetune=lora_slimllm"]):
        switched = resolve_config(OmegaConf.to_container(_compose(["method=magnitude", *overrides]), resolve=True))
        assert run_key(switched) != run_key(config), overrides



def _resolved(overrides):
    return resolve_config(OmegaConf.to_container(_compose(overrides), resolve=True))


def test_one_record_per_computation_across_tables_and_scale_caps():
    """At scale=cpu, Tables 2, 8 and 9 ask for the same SmolLM2 runs (only the paper model
    they stand in for differs): one key. A dense row is one key whatever `finetune` a
    table sweeps. A scale cap that leaves the resolved values alone changes nothing."""
    keys = {model: run_key(_resolved([f"model={model}", "recipe=slimllm/paper", "prune.ratio=0.5", "eval=full"]))
            for model in ("llama2-7b", "vicuna-7b", "llama-13b")}
    assert len(set(keys.values())) == 1, keys
    paper = run_key(_resolved(["model=llama2-7b", "recipe=slimllm/paper", "prune.ratio=0.5", "eval=full", "scale=paper"]))
    assert paper != keys["llama2-7b"]
    dense = [run_key(_resolved(["recipe=dense", f"finetune={f}"])) for f in ("none", "lora_slimllm")]
    assert dense[0] == dense[1]
    assert run_key(_resolved(["recipe=slimllm/paper", "prune.ratio=0.5", "finetune=lora_slimllm"])) != run_key(
        _resolved(["recipe=slimllm/paper", "prune.ratio=0.5"]))
    base = _resolved(["method=magnitude"])
    assert run_key(base) == run_key(_resolved(["method=magnitude", "+scale.some_new_cap=3"]))


def test_scale_cpu_caps_stream_calibration_at_what_the_local_slice_holds():
    capped = _resolved(["recipe=slimllm/ratio50", "method=slimllm", "schedule=cosine_softmax", "calib=bookcorpus",
                        "calib.n_samples=64"])
    assert capped["calib"]["n_samples"] == 8105 // 128 == 63
    assert _resolved(["calib=bookcorpus", "calib.n_samples=64", "scale=paper"])["calib"]["n_samples"] == 64
    assert _resolved(["calib=bookcorpus", "calib.n_samples=64", "calib.seqlen=64"])["calib"]["n_samples"] == 64
    assert _resolved(["calib=c4", "calib.n_samples=128"])["calib"]["n_samples"] == 128


@pytest.mark.parametrize("experiment", experiment_names())
def test_every_report_plot_names_a_kind_and_its_axes(experiment):
    from slimexp.report.plots import KINDS

    for spec in OmegaConf.load(Path(__file__).resolve().parents[1] / "experiments" / f"{experiment}.yaml").report.get("plots") or []:
        assert spec.kind in KINDS and spec.y, spec
        assert spec.kind != "curve" or spec.x, spec


# DESIGN §7's reproduction catalog: every table and figure, and the files that run it.
DESIGN_CATALOG = {
    "SlimLLM Table 1": ["slimllm/table1_main", "slimllm/table1_lora"],
    "SlimLLM Table 2": ["slimllm/table2_llama2"],
    "SlimLLM Table 3": ["slimllm/table3_latency"],
    "SlimLLM Table 4": ["slimllm/table4_ablation"],
    "SlimLLM Table 5": ["slimllm/table5_alpha"],
    "SlimLLM Table 6": ["slimllm/table6_linear_regression"],
    "SlimLLM Table 7": ["slimllm/table7_calibration_size"],
    "SlimLLM Tables 8-9": ["slimllm/table8_vicuna", "slimllm/table9_llama13b"],
    "SlimLLM Figure 2": ["slimllm/fig2_regression_coefficients"],
    "SlimGPT Table 1": ["slimgpt/table1_ppl", "slimgpt/table1_lora"],
    "SlimGPT Table 2": ["slimgpt/table2_scale"],
    "SlimGPT Table 3": ["slimgpt/table3_pruning_cost"],
    "SlimGPT Table 4": ["slimgpt/table4_inference"],
    "SlimGPT Table 5": ["slimgpt/table5_ablation"],
    "SlimGPT Table 6": ["slimgpt/table6_ratio_strategies"],
    "SlimGPT Table 14": ["slimgpt/table14_calib_data"],
    "SlimGPT Figure 2": ["slimgpt/fig2_first_layer"],
    "SlimGPT Figure 3": ["slimgpt/fig3_calib_samples", "slimgpt/fig3_calib_seqlen"],
    "SlimGPT Figure 4": ["slimgpt/fig4_layer_ratios"],
}


def test_every_table_and_figure_of_the_design_catalog_has_its_experiment_files():
    known = set(experiment_names())
    missing = {item: files for item, files in DESIGN_CATALOG.items() if not set(files) <= known}
    assert not missing


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("experiment", experiment_names())
def test_every_sweep_point_of_every_experiment_resolves(experiment, scale):
    """Each run an experiment asks for composes, resolves (recipes' per-ratio settings
    included) and passes validation at both scales, before anything is loaded."""
    configs = resolved_points(experiment, [f"scale={scale}"])
    assert configs, experiment
    for config in configs:
        validate_config(config)


def test_sweep_points_are_the_cartesian_product_with_bracketed_values_kept(tmp_path, monkeypatch):
    import slimexp.catalog as catalog

    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "t.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      recipe: a,b\n      eval.zeroshot.tasks: '[piqa,boolq],[arc_easy]'\n"
    )
    monkeypatch.setattr(catalog, "EXPERIMENTS", tmp_path)
    assert catalog.experiment_names() == ["paper/t"]
    assert catalog.sweep_points("paper/t") == [
        ["recipe=a", "eval.zeroshot.tasks=[piqa,boolq]"], ["recipe=a", "eval.zeroshot.tasks=[arc_easy]"],
        ["recipe=b", "eval.zeroshot.tasks=[piqa,boolq]"], ["recipe=b", "eval.zeroshot.tasks=[arc_easy]"],
    ]


def test_an_experiment_whose_runs_another_one_did_is_registered_and_reported(tmp_path):
    """reproduce.sh skips an experiment with nothing left to run; `pending --register`
    lists the shared done runs under it, so its report still finds them."""
    from slimexp.catalog import pending_runs
    from slimexp.report.cli import build_report
    from slimexp.tracking.store import ResultsStore

    experiment = "slimllm/fig2_regression_coefficients"
    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    configs = resolved_points(experiment, overrides)
    assert pending_runs(experiment, overrides) == len(configs) == 2
    for config in configs:
        store.write({"run_key": run_key(config), "status": "done", "experiment": "slimllm/table6_linear_regression",
                     "experiments": ["slimllm/table6_linear_regression"], "method": "slimllm", "model": "smollm2-135m",
                     "ratio": config["prune"]["ratio"], "finetune": "none", "config": config,
                     "metrics": {"ppl/wikitext2": 100.0 + config["prune"]["ratio"], "ppl/ptb": 1.0}})
    assert pending_runs(experiment, overrides) == 0
    with pytest.raises(Exception, match="no done runs"):
        build_report(experiment, tmp_path)
    stale = dict(configs[0], prune={**configs[0]["prune"], "ratio": 0.3})  # the file no longer asks for it
    store.write({"run_key": run_key(stale), "status": "done", "experiment": experiment, "experiments": [experiment],
                 "method": "slimllm", "ratio": 0.3, "finetune": "none", "config": stale, "metrics": {"ppl/wikitext2": 7.0}})
    other_scale = dict(stale, scale={**stale["scale"], "name": "paper"}, seed=1)
    store.write({"run_key": run_key(other_scale), "status": "done", "experiments": [experiment], "config": other_scale,
                 "method": "slimllm", "ratio": 0.3, "finetune": "none", "metrics": {"ppl/wikitext2": 8.0}})
    assert pending_runs(experiment, overrides, register=True) == 0
    assert store.read(run_key(stale))["experiments"] == []  # off the list, still in the store
    assert "7.00" not in build_report(experiment, tmp_path)  # and out of the report
    assert store.read(run_key(other_scale))["experiments"] == [experiment]  # another scale's run is not judged here
    store.path(run_key(other_scale)).unlink()
    assert all(r["experiments"] == ["slimllm/table6_linear_regression", experiment] for r in store.records() if r["ratio"] != 0.3)
    assert "100.50" in build_report(experiment, tmp_path)
    from slimexp.report.cli import main as report_main

    with pytest.raises(SystemExit) as exit_code:  # the other experiments have no runs here
        report_main(["--all", "--results-dir", str(tmp_path)])
    assert exit_code.value.code == 1
    assert "100.50" in (tmp_path / "reports" / f"{experiment}.md").read_text()
    plots = sorted(p.name for p in (tmp_path / "reports").rglob("*.png"))
    # Table 6's curve has its data; Figure 2's per-layer plot has none in these records: skipped.
    assert plots == ["table6_linear_regression_config_variant_ppl_wikitext2_ppl_ptb.png"]
