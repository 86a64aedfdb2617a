"""Every option of every config group and every experiment file composes; typos fail."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from slimexp.checks import validate_config
from slimexp.config import register_configs
from slimexp.errors import SlimexpError
from slimexp.experiments import experiment_names, resolved_points
from slimexp.pipeline import resolve_config
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
    config = resolve_config(
        OmegaConf.to_container(_compose(["model=llama-7b", "calib.n_samples=256", "calib.seqlen=2048"]), resolve=True)
    )
    assert config["model"]["name"] == "smollm2-135m" and config["model"]["substitutes_for"] == "llama-7b"
    assert (config["calib"]["n_samples"], config["calib"]["seqlen"]) == (128, 128)
    assert config["eval"]["ppl"]["max_windows"] == 128
    paper = resolve_config(OmegaConf.to_container(_compose(["model=llama-7b", "scale=paper"]), resolve=True))
    assert paper["model"]["hf_id"] == "huggyllama/llama-7b" and paper["eval"]["ppl"]["max_windows"] is None


def test_dense_runs_share_one_key_across_ratios():

    keys = {
        run_key(resolve_config(OmegaConf.to_container(_compose(["method=dense", f"prune.ratio={r}"]), resolve=True)))
        for r in (0.2, 0.5)
    }
    assert len(keys) == 1
    pruned = {
        run_key(
            resolve_config(OmegaConf.to_container(_compose(["method=magnitude", f"prune.ratio={r}"]), resolve=True))
        )
        for r in (0.2, 0.5)
    }
    assert len(pruned) == 2


def test_a_trained_dense_model_is_one_run_for_every_seed():
    """Seeds shift calibration draws and LoRA order, neither of which a dense run has; a
    randomly initialised model draws its weights from the seed and keeps it."""

    def key(*overrides):
        return run_key(resolve_config(OmegaConf.to_container(_compose(list(overrides)), resolve=True)))

    assert len({key("method=dense", f"seed={s}") for s in (0, 1, 2)}) == 1
    assert len({key("method=dense", "model=tiny-llama-gqa", f"seed={s}") for s in (0, 1)}) == 2
    assert len({key("method=magnitude", f"seed={s}") for s in (0, 1)}) == 2


def test_variant_and_recipe_rows_override_the_experiment():
    paper50 = ["experiment=slimllm/table4_ablation", "recipe=slimllm/paper", "prune.ratio=0.5"]
    full = _compose([*paper50, "variant=slimllm/full"])
    uniform = _compose([*paper50, "variant=slimllm/uniform_ratio"])
    assert (full.schedule.alpha, full.schedule.n_pruned_frac, full.prune.ratio) == (7.0, 0.9375, 0.5)
    assert (uniform.schedule.alpha, uniform.schedule.n_pruned_frac, uniform.variant) == (0.0, 1.0, "uniform_ratio")
    no_greedy = _compose(["method=slimllm", "variant=slimllm/no_greedy_search"])
    assert no_greedy.method.greedy_search is False and no_greedy.variant == "no_greedy_search"


def test_dense_ignores_recipe_and_variant():
    from slimexp.tracking.store import run_key

    plain = resolve_config(OmegaConf.to_container(_compose(["method=dense"]), resolve=True))
    labelled = resolve_config(
        OmegaConf.to_container(
            _compose(["method=dense", "recipe=slimllm/paper", "prune.ratio=0.5", "variant=slimllm/full"]), resolve=True
        )
    )
    assert run_key(plain) == run_key(labelled)


def test_slimllm_paper_recipe_pairs_alpha_with_the_ratio():
    for ratio, alpha, frac in ((0.2, 10.0, 0.8125), (0.5, 7.0, 0.9375)):
        swept = _compose(["recipe=slimllm/paper", f"prune.ratio={ratio}"])
        assert (swept.schedule.alpha, swept.schedule.n_pruned_frac) == (alpha, frac)
        assert swept.method.name == "slimllm" and swept.calib.dataset == "bookcorpus"
        assert swept.schedule.name == "cosine_softmax" and swept.prune.absorb_rounding is False
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
    keys = {
        model: run_key(_resolved([f"model={model}", "recipe=slimllm/paper", "prune.ratio=0.5", "eval=full"]))
        for model in ("llama2-7b", "vicuna-7b", "llama-13b")
    }
    assert len(set(keys.values())) == 1, keys
    paper = run_key(
        _resolved(["model=llama2-7b", "recipe=slimllm/paper", "prune.ratio=0.5", "eval=full", "scale=paper"])
    )
    assert paper != keys["llama2-7b"]
    dense = [run_key(_resolved(["recipe=dense", f"finetune={f}"])) for f in ("none", "lora_slimllm")]
    assert dense[0] == dense[1]
    assert run_key(_resolved(["recipe=slimllm/paper", "prune.ratio=0.5", "finetune=lora_slimllm"])) != run_key(
        _resolved(["recipe=slimllm/paper", "prune.ratio=0.5"])
    )
    base = _resolved(["method=magnitude"])
    assert run_key(base) == run_key(_resolved(["method=magnitude", "+scale.some_new_cap=3"]))


def test_scale_cpu_caps_stream_calibration_at_what_the_local_slice_holds():
    capped = _resolved(["recipe=slimllm/paper", "prune.ratio=0.5", "calib.n_samples=64"])
    assert capped["calib"]["n_samples"] == 8105 // 128 == 63
    assert _resolved(["calib=bookcorpus", "calib.n_samples=64", "scale=paper"])["calib"]["n_samples"] == 64
    assert _resolved(["calib=bookcorpus", "calib.n_samples=64", "calib.seqlen=64"])["calib"]["n_samples"] == 64
    assert _resolved(["calib=c4", "calib.n_samples=128"])["calib"]["n_samples"] == 128


@pytest.mark.parametrize("experiment", experiment_names())
def test_every_report_plot_names_a_kind_and_its_axes(experiment):
    from slimexp.report.plots import KINDS

    for spec in (
        OmegaConf.load(Path(__file__).resolve().parents[1] / "experiments" / f"{experiment}.yaml").report.get("plots")
        or []
    ):
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


def test_sweep_points_follow_hydras_basic_sweeper(tmp_path, monkeypatch):
    """The Cartesian product in order, bracketed values kept whole, Hydra's range() and a
    command-line override of a swept key replacing the file's values."""
    import slimexp.experiments as experiments

    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "t.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      recipe: a,b\n      eval.zeroshot.tasks: '[piqa,boolq],[arc_easy]'\n"
    )
    (tmp_path / "paper" / "reference").mkdir()
    (tmp_path / "paper" / "reference" / "r.yaml").write_text("{}\n")
    monkeypatch.setattr(experiments, "EXPERIMENTS_DIR", tmp_path)
    assert experiments.experiment_names() == ["paper/t"]
    assert experiments.experiment_points("paper/t") == [
        ["recipe=a", "eval.zeroshot.tasks=[piqa,boolq]", "experiment=paper/t"],
        ["recipe=a", "eval.zeroshot.tasks=[arc_easy]", "experiment=paper/t"],
        ["recipe=b", "eval.zeroshot.tasks=[piqa,boolq]", "experiment=paper/t"],
        ["recipe=b", "eval.zeroshot.tasks=[arc_easy]", "experiment=paper/t"],
    ]
    assert experiments.experiment_points("paper/t", ["recipe=c", "prune.ratio=range(0.2,0.6,0.3)"]) == [
        ["recipe=c", "eval.zeroshot.tasks=[piqa,boolq]", "experiment=paper/t", "prune.ratio=0.2"],
        ["recipe=c", "eval.zeroshot.tasks=[piqa,boolq]", "experiment=paper/t", "prune.ratio=0.5"],
        ["recipe=c", "eval.zeroshot.tasks=[arc_easy]", "experiment=paper/t", "prune.ratio=0.2"],
        ["recipe=c", "eval.zeroshot.tasks=[arc_easy]", "experiment=paper/t", "prune.ratio=0.5"],
    ]


def test_an_experiment_finds_its_runs_from_its_own_sweep_points(tmp_path):
    """Records hold no list of experiments: Figure 2's runs are the SlimLLM runs Table 6
    made, found by key and labelled by Figure 2's own points; a record no point names
    (an edited sweep) is in no report; the pending count reads the same keys."""
    from slimexp.catalog import pending_runs
    from slimexp.report.cli import build_report, write_reports
    from slimexp.tracking.store import ResultsStore

    experiment = "slimllm/fig2_regression_coefficients"
    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    configs = resolved_points(experiment, overrides)
    assert pending_runs(experiment, overrides) == len(configs) == 2
    for config in configs:
        made_by_table6 = dict(
            config, experiment_name="slimllm/table6_linear_regression", variant="no_linear_regression"
        )
        store.write(
            {
                "run_key": run_key(made_by_table6),
                "status": "done",
                "experiment": "slimllm/table6_linear_regression",
                "method": "slimllm",
                "model": "smollm2-135m",
                "ratio": config["prune"]["ratio"],
                "finetune": "none",
                "config": made_by_table6,
                "metrics": {"ppl/wikitext2": 100.0 + config["prune"]["ratio"], "ppl/ptb": 1.0},
            }
        )
    assert pending_runs(experiment, overrides) == 0  # labels are not hashed: the same keys
    stale = dict(configs[0], prune={**configs[0]["prune"], "ratio": 0.3})  # the file no longer asks for it
    store.write(
        {
            "run_key": run_key(stale),
            "status": "done",
            "experiment": experiment,
            "method": "slimllm",
            "ratio": 0.3,
            "finetune": "none",
            "config": stale,
            "metrics": {"ppl/wikitext2": 7.0},
        }
    )
    text = build_report(experiment, tmp_path, overrides=overrides)
    assert "100.50" in text and "100.20" in text and "7.00" not in text
    from slimexp.experiments import point_records

    records, missing = point_records(configs, store.get)
    assert not missing and {r["config"]["variant"] for r in records} == {"full"}
    assert {r["experiment"] for r in records} == {experiment}
    assert (
        write_reports(experiment_names(), tmp_path / "reports", tmp_path, overrides) == 0
    )  # others: listed, not failed
    assert "100.50" in (tmp_path / "reports" / f"{experiment}.md").read_text()
    plots = sorted(p.name for p in (tmp_path / "reports").rglob("*.png"))
    # The same SlimLLM runs are rows of Tables 1, 4, 5, 6 and 7 too: their curves are drawn.
    # Figure 2's per-layer plot has no data in these records: skipped, its table written.
    assert "table6_linear_regression_config_variant_ppl_wikitext2_ppl_ptb.png" in plots
    assert "table4_ablation_config_variant_ppl_wikitext2_ppl_ptb.png" in plots
    assert not [p for p in plots if p.startswith("fig2_")]


# What each recipe must build (issue: `slimllm/ratio50` once ran SlimGPT with a uniform schedule).
RECIPE_CLASSES = {
    "dense": ("Dense", None),
    "flap/paper": ("FLAP", "Uniform"),
    "llm_pruner/authors20": ("LLMPruner", "LayerRange"),
    "llm_pruner/paper": ("LLMPruner", "LayerRange"),
    "lorap/paper": ("LoRAP", "Uniform"),
    "loraprune/paper": ("LoRAPrune", "LayerRange"),
    "magnitude/paper": ("Magnitude", "Uniform"),
    "random/paper": ("Random", "Uniform"),
    "slimgpt/paper": ("SlimGPT", "LogIncrease"),
    "slimllm/paper": ("SlimLLM", "CosineSoftmax"),
    "wanda_sp/paper": ("WandaSP", "Uniform"),
}
# The recipe each ablation variant belongs to.
VARIANT_RECIPES = {"slimgpt": "slimgpt/paper", "slimllm": "slimllm/paper"}


def _built(overrides):
    from slimexp.checks import build_method, build_schedule

    config = _resolved(overrides)
    method = build_method(config["method"])
    schedule = None if config["method"]["name"] == "dense" else build_schedule(config["schedule"])
    return config, type(method).__name__, type(schedule).__name__ if schedule is not None else None


def test_every_recipe_is_in_the_table():
    assert sorted(_options("recipe")) == sorted(RECIPE_CLASSES)


@pytest.mark.parametrize("recipe", sorted(RECIPE_CLASSES))
def test_every_recipe_builds_the_method_and_schedule_its_name_says(recipe):
    config, method, schedule = _built([f"recipe={recipe}", "prune.ratio=0.2"])
    assert (method, schedule) == RECIPE_CLASSES[recipe]
    assert config["method"]["name"] == recipe.split("/")[0]
    assert config.get("recipe", "dense") == recipe


@pytest.mark.parametrize("variant", [v for v in _options("variant") if not v.startswith("mix/")])
def test_every_variant_builds_with_its_recipe(variant):
    recipe = VARIANT_RECIPES[variant.split("/")[0]]
    config, method, schedule = _built([f"recipe={recipe}", "prune.ratio=0.5", f"variant={variant}"])
    assert (method, schedule) == RECIPE_CLASSES[recipe]
    assert config["variant"] == variant.split("/")[1]


@pytest.mark.parametrize("variant", [v for v in _options("variant") if v.startswith("mix/")])
def test_every_mix_cell_builds_the_parts_its_name_says(variant):
    """conf/variant/mix/<compensation>-<schedule>-<head score>: each cell picks its recipe."""
    cell = variant.split("/")[1]
    config, method, schedule = _built(["prune.ratio=0.5", f"variant={variant}"])
    assert config["variant"] == cell
    if cell == "slimllm_paper":
        assert config["recipe"] == "slimllm/paper" and (method, schedule) == RECIPE_CLASSES["slimllm/paper"]
        return
    compensation, schedule_name, head_score = cell.split("-")
    m = config["method"]
    assert config["recipe"] == "slimgpt/paper" and config["calib"]["dataset"] == "c4" and method == "SlimGPT"
    assert (m["compensate"], m["regression"]) == ((True, False) if compensation == "obs" else (False, True))
    assert config["schedule"]["name"] == schedule_name and m["head_score"] == head_score
    if schedule_name == "cosine_softmax":  # SlimLLM's 50% α and layer share
        assert (config["schedule"]["alpha"], config["schedule"]["n_pruned_frac"]) == (7.0, 0.9375)


@pytest.mark.parametrize("method", _options("method"))
def test_every_method_target_builds(method):
    _, built, _ = _built([f"method={method}"])
    import importlib

    from slimexp.pruning.engine import PruningMethod

    target = OmegaConf.load(CONF / "method" / f"{method}.yaml")._target_
    module, _, name = target.rpartition(".")
    assert built == name and issubclass(getattr(importlib.import_module(module), name), PruningMethod)


def test_a_variant_of_another_method_fails_before_loading():
    from slimexp.errors import SlimexpError

    with pytest.raises(SlimexpError, match="unknown setting method.greedy_search for method 'slimgpt'"):
        _built(["recipe=slimgpt/paper", "variant=slimllm/no_greedy_search"])


def test_labels_are_not_hashed():
    """The same computation under two labels is one run key (issue: SlimLLM 50% ran twice,
    as table1_main's recipe row and as Table 4's `full` variant)."""
    as_recipe = _resolved(["experiment=slimllm/table1_main", "recipe=slimllm/paper", "prune.ratio=0.5"])
    as_variant = _resolved(
        ["experiment=slimllm/table4_ablation", "recipe=slimllm/paper", "prune.ratio=0.5", "variant=slimllm/full"]
    )
    assert (
        as_recipe["variant"] != as_variant["variant"] and as_recipe["experiment_name"] != as_variant["experiment_name"]
    )
    assert run_key(as_recipe) == run_key(as_variant)
    slimgpt_t1 = _resolved(["experiment=slimgpt/table1_ppl", "recipe=slimgpt/paper", "prune.ratio=0.5"])
    slimgpt_t5 = _resolved(["experiment=slimgpt/table5_ablation", "variant=slimgpt/full"])
    assert run_key(slimgpt_t1) == run_key(slimgpt_t5)


def test_the_bos_switch_at_the_papers_protocol_keeps_older_run_keys():
    """Records made before eval.ppl.bos existed had none: `stream` (their protocol) hashes
    as before, `per_window` is another run."""
    import copy

    config = _resolved(["method=magnitude"])
    older = copy.deepcopy(config)
    older["eval"]["ppl"].pop("bos")
    assert config["eval"]["ppl"]["bos"] == "stream" and run_key(config) == run_key(older)
    assert run_key(_resolved(["method=magnitude", "eval.ppl.bos=per_window"])) != run_key(config)


@pytest.mark.parametrize("overrides", [["method=dense"], ["recipe=slimllm/paper", "prune.ratio=0.5", "model=llama-7b"]])
def test_resolving_a_resolved_config_changes_nothing(overrides):
    once = _resolved(overrides)
    assert resolve_config(once) == once


def test_no_refactor_moves_a_catalog_run_key():
    """Every sweep point of the catalog, at both scales, hashes as recorded in
    tests/data/catalog_run_keys.json: a change to configs, defaults or resolution that
    would silently make a stored result unreachable (or a new protocol look like an old
    one) fails here. A deliberate protocol change regenerates the file and says why."""
    import json

    recorded = json.loads((Path(__file__).parent / "data" / "catalog_run_keys.json").read_text())
    now = {
        f"{scale}:{name}": [run_key(c) for c in resolved_points(name, [f"scale={scale}"])]
        for scale in ("cpu", "paper")
        for name in experiment_names()
    }
    changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
    assert not changed, f"run keys moved in {changed[:5]}"


def test_scale_paper_runs_half_precision_and_warns_on_a_cpu(caplog):
    import logging

    import torch

    from slimexp.checks import warn_half_on_cpu

    paper, cpu = _resolved(["scale=paper", "model=llama-7b"]), _resolved(["scale=cpu"])
    assert (paper["dtype"], cpu["dtype"]) == ("float16", "float32")
    assert _resolved(["scale=paper", "model=llama-7b", "dtype=bfloat16"])["dtype"] == "bfloat16"
    with caplog.at_level(logging.WARNING, logger="slimexp"):
        warn_half_on_cpu(cpu, torch.device("cpu"))
        assert not caplog.records
        warn_half_on_cpu(paper, torch.device("cpu"))
    assert "add dtype=float32 for a CPU run" in caplog.text


def test_timing_adds_each_phase_per_experiment_and_each_shared_run_once(tmp_path, capsys):
    """Table 9's runs are Table 8's (same keys): each experiment counts them, the catalog
    row once; runs without a record or not done count nothing."""
    from slimexp.catalog import main, phase_minutes
    from slimexp.tracking.store import ResultsStore

    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    configs = list({run_key(c): c for c in resolved_points("slimllm/table9_llama13b", overrides)}.values())
    for i, config in enumerate(configs[:2]):
        store.write(
            {
                "run_key": run_key(config),
                "status": "done" if i == 0 else "failed",
                "config": config,
                "metrics": {"time/prune_s": 120.0, "time/zeroshot_s": 60.0, "time/total_s": 200.0},
            }
        )
    rows = phase_minutes(["slimllm/table9_llama13b", "slimllm/table8_vicuna"], overrides, str(tmp_path))
    by_name = {name: (done, total, minutes) for name, done, total, minutes in rows}
    done, total, minutes = by_name["slimllm/table9_llama13b"]
    assert (done, total) == (1, len(configs))
    assert minutes["prune"] == 2.0 and minutes["zeroshot"] == 1.0 and minutes["eval"] == 0.0
    assert by_name["slimllm/table8_vicuna"][0] == 1
    every = {
        run_key(c)
        for name in ("slimllm/table9_llama13b", "slimllm/table8_vicuna")
        for c in resolved_points(name, overrides)
    }
    assert by_name["all, each run once"][:2] == (1, len(every)) > (1, len(configs))  # done of all, each key once
    assert by_name["all, each run once"][2]["total"] == 200.0 / 60
    assert main(["timing", "slimllm/table9_llama13b", "--results-dir", str(tmp_path), "--override", overrides[0]]) == 0
    assert "all, each run once" in capsys.readouterr().out


def test_timing_with_claim_seeds_counts_the_claim_runs_at_those_seeds(tmp_path, capsys):
    """Table 5's claims compare its four α runs: with --claim-seeds 1,2 the experiment has 12
    runs, the seed-1 records add their minutes, and a seed not asked for adds nothing."""
    from slimexp.catalog import main, phase_minutes
    from slimexp.experiments import experiment_points, resolve_points
    from slimexp.tracking.store import ResultsStore

    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    base = resolved_points("slimllm/table5_alpha", overrides)
    points = experiment_points("slimllm/table5_alpha", overrides)
    seeded = resolve_points([[*point, f"seed={s}"] for s in (1, 3) for point in points[:2]])
    for config in [*base, *seeded]:
        record = {"run_key": run_key(config), "status": "done", "config": config}
        store.write({**record, "metrics": {"time/prune_s": 60.0, "time/total_s": 120.0}})
    rows = phase_minutes(["slimllm/table5_alpha"], overrides, str(tmp_path), [1, 2])
    name, done, total, minutes = rows[0]
    assert (done, total) == (len(base) + 2, 3 * len(base)) and minutes["prune"] == len(base) + 2
    assert phase_minutes(["slimllm/table5_alpha"], overrides, str(tmp_path))[0][1:3] == (len(base), len(base))
    args = ["timing", "slimllm/table5_alpha", "--claim-seeds", "1,2", "--results-dir", str(tmp_path)]
    assert main([*args, "--override", overrides[0]]) == 0
    assert f"{len(base) + 2:>4d}/{3 * len(base):<4d}" in capsys.readouterr().out


def _done_records(store, configs) -> None:
    from slimexp.pipeline import new_record

    for config in configs:
        record = new_record(config, run_key(config))
        store.write({**record, "status": "done"})


def test_claim_seeds_are_exactly_the_runs_the_claims_compare_at_each_further_seed(tmp_path, capsys):
    """SlimLLM Table 1's claims compare SlimLLM, LLM-Pruner, LoRAPrune and LoRAP at 20% and
    50%: those 8 runs, and no other row, are asked for at seeds 1 and 2, each its base run
    but for the seed; until the base runs are done the command says to run them first."""
    from slimexp.catalog import main, seed_jobs
    from slimexp.tracking.store import ResultsStore

    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    base = resolved_points("slimllm/table1_main", overrides)
    with pytest.raises(SlimexpError, match="run those experiments first"):
        seed_jobs(["slimllm/table1_main"], [1, 2], overrides, store)
    _done_records(store, base)
    jobs = seed_jobs(["slimllm/table1_main"], [1, 2], overrides, store)
    configs = [config for _, config in jobs]
    assert sorted(c["seed"] for c in configs) == [1] * 8 + [2] * 8
    compared = {(c["method"]["name"], c["prune"]["ratio"]) for c in configs}
    assert compared == {(m, r) for m in ("slimllm", "llm_pruner", "loraprune", "lorap") for r in (0.2, 0.5)}
    base_keys = {run_key(c) for c in base}
    assert all(run_key({**c, "seed": 0}) in base_keys for c in configs)
    with pytest.raises(SlimexpError, match="--seeds"):
        seed_jobs(["slimllm/table1_main"], [1], [*overrides, "seed=1"], store)
    args = ["seeds", "slimllm/table1_main", "--seeds", "1,2", "--dry-run", "--results-dir", str(tmp_path)]
    assert main([*args, "--override", overrides[0]]) == 0
    out = capsys.readouterr().out
    assert "16, of which 16 to do" in out and "[16/16] slimllm/table1_main seed=2" in out
    assert len(list(store.records())) == len(base_keys)  # a dry run runs nothing


def test_claim_seeds_refuse_a_claim_side_that_selects_none_of_the_done_runs(tmp_path, monkeypatch):
    import slimexp.catalog
    from slimexp.catalog import seed_jobs
    from slimexp.tracking.store import ResultsStore

    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    _done_records(store, resolved_points("slimllm/table5_alpha", overrides))
    assert seed_jobs(["slimllm/table5_alpha"], [1], overrides, store)
    typo = [
        {
            "claim": "c",
            "metric": "ppl/wikitext2",
            "better": {"config.schedule.alpha": 7.0},
            "worse": {"config.schedule.alpha": 70.0},
        }
    ]
    monkeypatch.setattr(slimexp.catalog, "experiment_claims", lambda name: typo)
    with pytest.raises(SlimexpError, match=r"select none of its runs: 'c': \{'config.schedule.alpha': 70.0\}"):
        seed_jobs(["slimllm/table5_alpha"], [1], overrides, store)


def test_claim_seeds_leave_out_a_run_whose_draw_took_every_window_of_its_source(tmp_path):
    """LoRAP at scale=cpu draws all 63 BookCorpus windows the local slice holds: its seed-0
    record says so, and no further seed of it is run (its one record serves every seed)."""
    from slimexp.catalog import seed_jobs
    from slimexp.tracking.store import ResultsStore

    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    base = resolved_points("slimllm/table1_main", overrides)
    _done_records(store, base)
    for config in base:
        if config["method"]["name"] == "lorap":
            record = store.get(run_key(config))
            held = config["calib"]["n_samples"]
            record["protocol"] = {"calibration": {"sampling": "stream", "n_samples": held, "source_windows": held}}
            store.write(record)
    methods = {config["method"]["name"] for _, config in seed_jobs(["slimllm/table1_main"], [1, 2], overrides, store)}
    assert methods == {"slimllm", "llm_pruner", "loraprune"}


def test_a_record_made_before_source_windows_is_read_from_the_scales_declared_token_count(tmp_path):
    """Table 2's LoRAP seed-0 records predate `source_windows`: their protocol names the
    draw (63 of 128 tokens, stream) and their config the local slice's 8105 SmolLM2 tokens,
    so a run without LoRA serves every seed; the same record on another model, on hub data,
    or after LoRA (its order draws from the seed) does not."""
    from slimexp.catalog import seed_jobs
    from slimexp.tracking.store import ResultsStore, record_seed_independent

    overrides = [f"results.dir={tmp_path}"]
    store = ResultsStore(tmp_path)
    base = resolved_points("slimllm/table2_llama2", overrides)
    _done_records(store, base)
    lorap = [c for c in base if c["method"]["name"] == "lorap" and c["finetune"]["name"] == "none"]
    assert lorap and all(config["calib"]["n_samples"] == 8105 // 128 for config in lorap)
    before = {config["method"]["name"] for _, config in seed_jobs(["slimllm/table2_llama2"], [1, 2], overrides, store)}
    for config in lorap:
        record = store.get(run_key(config))
        record["protocol"] = {"calibration": {**config["calib"], "sampling": "stream"}}
        assert "source_windows" not in record["protocol"]["calibration"]
        store.write(record)
        assert record_seed_independent(record)
        assert not record_seed_independent({**record, "config": {**config, "data": {"dir": None}}})
        assert not record_seed_independent({**record, "config": {**config, "model": {"name": "llama2-7b"}}})
        fewer = {**record["protocol"]["calibration"], "n_samples": 62}
        assert not record_seed_independent({**record, "protocol": {"calibration": fewer}})
    after = {config["method"]["name"] for _, config in seed_jobs(["slimllm/table2_llama2"], [1, 2], overrides, store)}
    assert "lorap" in before and "lorap" not in after and after == before - {"lorap"}
