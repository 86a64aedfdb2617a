"""Results store, W&B mirror and slimexp-report: a tiny sweep ends in a pandas table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import record_dict, run_module
from slimexp.errors import SlimexpError
from slimexp.report.tables import experiment_table, render
from slimexp.tracking.store import ResultsStore, run_key
from slimexp.tracking.wandb_logger import offline_summary

REPO = Path(__file__).resolve().parents[1]


def test_store_writes_atomically_and_warns_about_unreadable_records(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    store.write(record_dict("k1", "dense", 0.0, 10.0, status="running"))
    assert not store.is_done("k1")
    store.write(record_dict("k1", "dense", 0.0, 10.0))
    assert store.is_done("k1") and not list((tmp_path / "runs").glob(".*tmp"))
    (tmp_path / "runs" / "broken.json").write_text("{")
    (tmp_path / "runs" / "binary.json").write_bytes(b"\xff\xfe")
    assert [r["run_key"] for r in store.records()] == ["k1"]
    warning = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warning) == 1 and "2 unreadable record(s)" in warning[0]
    assert "broken.json" in warning[0] and "binary.json" in warning[0]
    assert store.get("broken") is None and not store.is_done("broken")


def test_run_key_ignores_paths_and_logging_but_not_science():
    base = {
        "method": {"name": "wanda_sp"},
        "prune": {"ratio": 0.2},
        "results": {"dir": "a"},
        "logger": {"mode": "disabled"},
        "data": {"dir": "/x", "source": "local"},
        "calib": {"n_samples": 128, "batch_size": 8},
        "tags": [],
    }
    moved = json.loads(json.dumps(base))
    moved["results"]["dir"], moved["logger"]["mode"], moved["data"]["dir"], moved["calib"]["batch_size"] = (
        "b",
        "online",
        "/y",
        2,
    )
    assert run_key(base) == run_key(moved)
    for path, value in ((("prune", "ratio"), 0.5), (("calib", "n_samples"), 64), (("data", "source"), "hub")):
        changed = json.loads(json.dumps(base))
        changed[path[0]][path[1]] = value
        assert run_key(changed) != run_key(base), path


def test_rekey_moves_records_and_models_onto_the_current_rule_and_keeps_duplicates(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    config = {"method": {"name": "slimllm"}, "prune": {"ratio": 0.5}, "model": {"name": "smollm2-135m"}}
    new = run_key(config)
    model_dir = tmp_path / "models" / "old_a"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_text("weights")
    # Three records hashed under an older rule (recipe/variant labels were hashed) that are
    # the same computation now; the running one must not win over the done ones, and the
    # second done one is kept aside, not deleted.
    store.write(
        {
            **record_dict("old_a", "slimllm", 0.5, 400.0, experiment="t1"),
            "config": {**config, "recipe": "slimllm/paper"},
            "model_path": str(model_dir),
        }
    )
    store.write({**record_dict("old_b", "slimllm", 0.5, None, experiment="t8", status="running"), "config": config})
    duplicate = record_dict("old_c", "slimllm", 0.5, 401.0, experiment="t4", config={**config, "variant": "full"})
    store.write(duplicate)
    (tmp_path / "runs" / "unreadable.json").write_text("{")
    moved = store.rekey()
    assert sorted(moved) == [("old_a", new), ("old_b", new), ("old_c", new)]
    assert [p.stem for p in (tmp_path / "runs").glob("*.json")] == [new, "unreadable"]
    record = store.read(new)
    assert record["status"] == "done" and record["run_key"] == new and record["metrics"]["ppl/wikitext2"] == 400.0
    kept = sorted(p.name for p in (tmp_path / "runs" / "superseded").glob("*.json"))
    assert kept == ["old_b.json", "old_c.json"]
    assert (
        json.loads((tmp_path / "runs" / "superseded" / "old_c.json").read_text())["metrics"]["ppl/wikitext2"] == 401.0
    )
    assert (
        Path(record["model_path"]) == tmp_path / "models" / new
        and (tmp_path / "models" / new / "model.safetensors").exists()
    )
    assert "1 unreadable record(s)" in capsys.readouterr().err
    assert store.rekey() == []


def test_the_rekey_command_skips_an_unreadable_record_with_a_warning(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "truncated.json").write_text('{"run_key": "trunc')
    result = run_module("slimexp.tracking.store", "rekey", "--results-dir", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 unreadable record(s) skipped" in result.stderr and "truncated.json" in result.stderr
    assert (runs / "truncated.json").exists()


def test_table_layout_reference_and_formats():
    records = [
        record_dict("a", "dense", 0.0, 10.0),
        record_dict("b", "wanda_sp", 0.2, 20.0),
        record_dict("c", "wanda_sp", 0.5, 50.0),
        record_dict("e", "wanda_sp", 0.5, 1.0, status="failed"),
    ]
    block = {"rows": ["method"], "columns": ["ratio"], "metrics": ["ppl/wikitext2"]}
    table = experiment_table(records, "exp", block)
    metric = "ppl/wikitext2"
    assert table.loc["wanda_sp", (metric, 0.2)] == 20.0 and table.loc["wanda_sp", (metric, 0.5)] == 50.0
    assert table.loc["dense", (metric, 0.0)] == 10.0
    reference = pd.DataFrame({"method": ["wanda_sp", "loraprune"], "ratio": [0.2, 0.2], "ppl/wikitext2": [18.5, 17.0]})
    with_paper = experiment_table(records, "exp", block, reference)
    assert with_paper.loc["wanda_sp", (metric, 0.2, "paper")] == 18.5
    assert with_paper.loc["wanda_sp", (metric, 0.2, "delta")] == pytest.approx(1.5)
    assert with_paper.loc["loraprune", (metric, 0.2, "paper")] == 17.0  # a published row we did not run stays
    # Published numbers sit beside ours; columns with no published number are left out.
    assert list(with_paper.columns) == [
        (metric, 0.0, "ours"),
        (metric, 0.2, "ours"),
        (metric, 0.2, "paper"),
        (metric, 0.2, "delta"),
        (metric, 0.5, "ours"),
    ]
    md = render(with_paper, "md", "T")
    assert "| wanda_sp" in md and "nan" not in md and "–" in md
    csv = render(table, "csv").splitlines()
    assert csv[0] == "method,ppl/wikitext2 0,ppl/wikitext2 0.2,ppl/wikitext2 0.5"  # the metric stays in the header
    with pytest.raises(SlimexpError, match="no done runs"):
        experiment_table([], "missing", block)
    with pytest.raises(SlimexpError, match="lists 2 published rows"):
        experiment_table(records, "exp", block, pd.concat([reference, reference]))


def test_latex_is_escaped_and_labels_formatted():
    records = [
        record_dict("b", "wanda_sp", 0.2, 20.0, metrics={"params/achieved_ratio": 0.2}),
        record_dict("c", "wanda_sp", 0.5, 50.0, metrics={"params/achieved_ratio": 0.5}),
    ]
    block = {"rows": ["method"], "columns": ["ratio"], "metrics": ["params/achieved_ratio"]}
    latex = render(experiment_table(records, "exp", block), "latex", "50% & more_things")
    assert r"wanda\_sp" in latex and r"params/achieved\_ratio" in latex and r"50\% \& more\_things" in latex
    assert "0.200000" not in latex and " 0.2 " in latex
    body = latex.replace(r"\_", "").replace(r"\%", "").replace(r"\&", "")
    assert "_" not in body and "%" not in body and "&" in body  # only column separators are bare


def test_a_cell_backed_by_two_records_is_an_error_naming_them_or_split_rows():
    """Two dense runs of two models in one cell were once shown as their mean."""
    a = record_dict("k_llama", "dense", 0.0, 48710.63, config={"model": {"name": "tiny-llama"}, "seed": 0})
    b = record_dict("k_gqa", "dense", 0.0, 49914.18, config={"model": {"name": "tiny-llama-gqa"}, "seed": 0})
    block = {"rows": ["method"], "columns": ["ratio"], "metrics": ["ppl/wikitext2"]}
    with pytest.raises(SlimexpError) as error:
        experiment_table([a, b], "exp", block)
    message = str(error.value)
    assert "\n" not in message and "k_llama" in message and "k_gqa" in message and "config.model.name" in message
    assert "config.seed" not in message
    split = experiment_table([a, b], "exp", {**block, "duplicates": "split"})
    assert sorted(split[("ppl/wikitext2", 0.0)].tolist()) == [48710.63, 49914.18]
    assert "config.model.name" in split.index.names
    with pytest.raises(SlimexpError, match="report.duplicates must be one of"):
        experiment_table([a, b], "exp", {**block, "duplicates": "mean"})


def test_seed_replicates_pool_into_mean_interval_and_n_and_nothing_else_does():
    from scipy import stats

    values = [108.9, 112.4, 104.1]
    seeds = [record_dict(f"s{i}", "slimllm", 0.2, v, config={"seed": i}) for i, v in enumerate(values)]
    lone = record_dict("d", "dense", 0.0, 53.9, config={"seed": 0})
    block = {"rows": ["method"], "columns": ["ratio"], "metrics": ["ppl/wikitext2"]}
    table = experiment_table([*seeds, lone], "exp", block)
    metric = "ppl/wikitext2"
    assert table.loc["slimllm", (metric, 0.2, "ours")] == pytest.approx(sum(values) / 3)
    low, high = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert table.loc["slimllm", (metric, 0.2, "±95%")] == pytest.approx((high - low) / 2)
    assert table.loc["slimllm", (metric, 0.2, "n")] == 3
    assert table.loc["dense", (metric, 0.0, "ours")] == 53.9 and table.loc["dense", (metric, 0.0, "n")] == 1
    md = render(table, "md", "T")
    (row,) = [line.replace(" ", "") for line in md.splitlines() if line.startswith("| slimllm")]
    assert "±95%" in md and row.endswith("|10.35|3|")  # n is a count, not 3.00
    reference = pd.DataFrame({"method": ["slimllm"], "ratio": [0.2], "ppl/wikitext2": [15.95]})
    beside = experiment_table([*seeds, lone], "exp", block, reference)
    assert beside.loc["slimllm", (metric, 0.2, "delta")] == pytest.approx(sum(values) / 3 - 15.95)
    # Replicates that also differ in anything else, or share a seed, stay an error.
    other = record_dict("x", "slimllm", 0.2, 99.0, config={"seed": 3, "calib": {"n_samples": 64}})
    with pytest.raises(SlimexpError, match="config.calib.n_samples"):
        experiment_table([*seeds, other], "exp", block)
    twin = record_dict("t", "slimllm", 0.2, 99.0, config={"seed": 0})
    with pytest.raises(SlimexpError, match="s0, t|t, s0"):
        experiment_table([seeds[0], twin], "exp", block)
    # What the run key ignores (batch sizes, the store, the logger) does not split replicates.
    faster = record_dict(
        "f", "slimllm", 0.2, 110.0, config={"seed": 4, "eval": {"ppl": {"batch_size": 32}}, "results": {"dir": "x"}}
    )
    assert experiment_table([*seeds, faster], "exp", block).loc["slimllm", (metric, 0.2, "n")] == 4


@pytest.mark.integration
def test_tiny_sweep_then_report_from_the_store_and_from_wandb(tmp_path):
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    science = ["model=tiny-llama", "eval.ppl.max_windows=2", "calib.n_samples=4", "calib.seqlen=32"]
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.cli",
            "-m",
            "experiment=smoke",
            *science,
            "method=dense,magnitude,wanda_sp",
            "prune.ratio=0.2,0.5",
            "logger=offline",
            f"logger.dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/multirun",
            "hydra/job_logging=disabled",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    records = list(ResultsStore(tmp_path).records())
    assert len(records) == 5  # one dense record serves both ratios
    assert all(r["status"] == "done" and r["experiment"] == "smoke" for r in records)
    overrides = [arg for o in science for arg in ("--override", o)]
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.report.cli",
            "smoke",
            "--format",
            "csv",
            "--results-dir",
            str(tmp_path),
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert {layer.split(",")[0] for layer in lines} >= {"dense", "magnitude", "wanda_sp"}
    # Both sources find runs by key (W&B run id = run key): the smoke sweep's points with the
    # same science overrides name them (its `random` rows were not run: absent in both).
    mirrored = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.report.cli",
            "smoke",
            "--format",
            "csv",
            "--source",
            "wandb",
            "--wandb-dir",
            str(tmp_path),
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert mirrored.returncode == 0, mirrored.stderr
    assert mirrored.stdout == report.stdout
    bad = run_module("slimexp.report.cli", "nope", "--results-dir", str(tmp_path), timeout=120)
    assert bad.returncode == 2 and "unknown experiment 'nope'" in bad.stderr


def test_wandb_offline_run_mirrors_the_record(tmp_path):
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(config_for(tmp_path, "method=magnitude", "logger=offline", f"logger.dir={tmp_path}"))
    assert record["wandb_id"] == record["run_key"]
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{record['run_key']}")
    summary = offline_summary(run_dir / f"run-{record['run_key']}.wandb")
    assert summary["ppl/wikitext2"] == pytest.approx(record["metrics"]["ppl/wikitext2"])
    assert summary["params/achieved_ratio"] == pytest.approx(record["metrics"]["params/achieved_ratio"])


def test_wandb_offline_run_carries_the_zero_shot_table_and_summary(tmp_path):
    """eval=zeroshot on a tiny model (3 documents of two tasks, local data)."""
    pytest.importorskip("lm_eval")
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(
        config_for(
            tmp_path,
            "method=magnitude",
            "eval=zeroshot",
            "eval.zeroshot.tasks=[piqa,arc_challenge]",
            "eval.zeroshot.limit=3",
            "logger=offline",
            f"logger.dir={tmp_path}",
        )
    )
    metrics = record["metrics"]
    for key in ("acc/piqa", "acc_norm/piqa", "acc/arc_challenge", "acc_norm/arc_challenge", "zeroshot/avg"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["zeroshot/avg"] == pytest.approx((metrics["acc/piqa"] + metrics["acc_norm/arc_challenge"]) / 2)
    protocol = record["protocol"]["zeroshot"]
    assert protocol["limit"] == 3 and protocol["lm_eval_version"] == "0.4.13"
    assert protocol["tasks"]["piqa"]["source"] == "local json"
    assert [row["task"] for row in record["zeroshot"]] == ["piqa", "arc_challenge"]
    assert all(row["n"] == 3 for row in record["zeroshot"])
    for task in ("piqa", "arc_challenge"):  # the documents each accuracy is the mean of
        documents = record["evidence"][f"zeroshot/{task}"]
        assert documents["doc_id"] == [0, 1, 2]
        for metric in ("acc", "acc_norm"):
            assert sum(documents[metric]) / 3 == pytest.approx(metrics[f"{metric}/{task}"])
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{record['run_key']}")
    summary = offline_summary(run_dir / f"run-{record['run_key']}.wandb")
    assert summary["zeroshot/avg"] == pytest.approx(metrics["zeroshot/avg"])
    assert summary["acc/piqa"] == pytest.approx(metrics["acc/piqa"])
    assert summary["zeroshot/_type"] == "table-file"
    table = json.loads((run_dir / "files" / summary["zeroshot/path"]).read_text())
    assert table["columns"] == ["task", "n", "acc", "acc_norm", "paper_metric"]
    assert [row[0] for row in table["data"]] == ["piqa", "arc_challenge"]


def _layered(key, method, ratio, ppl, alpha, widths, mse=None):
    config = {"schedule": {"alpha": alpha}}
    record = record_dict(key, method, ratio, ppl, experiment="plots", config=config, widths=widths)
    if mse is not None:
        record["analysis"] = {"ffn_output_mse": mse}
    return record


def test_plots_draw_the_records_values_beside_the_paper(tmp_path):
    from slimexp.report.plots import curve_figure, experiment_plots, layers_figure

    records = [
        _layered(
            "a",
            "slimllm",
            0.5,
            40.0,
            7.0,
            [{"ratio": 0.4, "ffn_regression_mean_a": 1.1}, {"ratio": 0.6, "ffn_regression_mean_a": 1.3}],
            [0.1, 0.3],
        ),
        _layered(
            "b",
            "slimllm",
            0.5,
            60.0,
            1.0,
            [{"ratio": 0.5, "ffn_regression_mean_a": 1.0}, {"ratio": 0.5, "ffn_regression_mean_a": 1.0}],
        ),
        _layered("c", "slimllm", 0.5, 45.0, 4.0, [{"ratio": 0.45}, {"ratio": 0.55}]),
        record_dict("d", "dense", 0.0, 20.0, experiment="plots"),
    ]
    reference = pd.DataFrame({"config.schedule.alpha": [1.0, 4.0, 7.0], "ppl/wikitext2": [54.17, 43.36, 37.89]})
    curve = curve_figure(records[:3], {"x": "config.schedule.alpha", "y": ["ppl/wikitext2"]}, reference)
    ours, paper = curve.axes
    assert ours.lines[0].get_xydata().tolist() == [[1.0, 60.0], [4.0, 45.0], [7.0, 40.0]]  # sorted by x
    assert paper.lines[0].get_xydata()[:, 1].tolist() == [54.17, 43.36, 37.89]
    bars = curve_figure([records[0], records[3]], {"x": "method", "y": ["ppl/wikitext2"]}, None).axes[0]
    assert sorted(p.get_height() for p in bars.patches) == [20.0, 40.0]
    with pytest.raises(SlimexpError, match=r"plot: cell \(method=slimllm\) holds 3 records"):  # never their mean
        curve_figure(records, {"x": "method", "y": ["ppl/wikitext2"]}, None)
    layers = layers_figure(records, {"y": ["ratio", "analysis.ffn_output_mse"], "series": ["config.schedule.alpha"]})
    ratio_axis, mse_axis = layers.axes
    assert [line.get_ydata().tolist() for line in ratio_axis.lines] == [[0.5, 0.5], [0.45, 0.55], [0.4, 0.6]]
    assert [line.get_label() for line in ratio_axis.lines] == ["alpha=1.0", "alpha=4.0", "alpha=7.0"]
    assert [line.get_ydata().tolist() for line in mse_axis.lines] == [[0.1, 0.3]]  # dense has no layers
    block = {
        "rows": ["method"],
        "metrics": ["ppl/wikitext2"],
        "plots": [
            {"kind": "curve", "x": "config.schedule.alpha", "y": "ppl/wikitext2"},
            {"kind": "layers", "y": ["ffn_regression_mean_a"]},
        ],
    }
    paths = experiment_plots(records[:3], block, reference, tmp_path, "t5")
    assert [p.name for p in paths] == [
        "t5_config_schedule_alpha_ppl_wikitext2.png",
        "t5_layer_ffn_regression_mean_a.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    with pytest.raises(SlimexpError, match="plot kind"):
        experiment_plots(records, {"plots": [{"kind": "pie", "y": "x"}]}, None, tmp_path, "t")
    with pytest.raises(SlimexpError, match="no run of the plot has per-layer values"):
        layers_figure(records[3:], {"y": ["ratio"]})
    assert experiment_plots(records[3:], {"plots": [{"kind": "layers", "y": "ratio"}]}, None, tmp_path, "t") == []


@pytest.mark.integration
def test_after_rekey_reproduce_finds_the_runs_stored_under_the_old_label_hashed_keys(tmp_path, monkeypatch):
    """A store made when recipe/variant were hashed: Table 4's `full` row exists only as
    Table 1's SlimLLM 50% run. After `rekey`, `reproduce.sh --dry-run` has nothing to do."""
    import slimexp.tracking.store as store_module
    from slimexp.experiments import resolved_points

    store = ResultsStore(tmp_path)
    experiment = "slimllm/table4_ablation"
    old_rule = tuple(k for k in store_module.NON_SCIENCE_KEYS if k not in ("recipe", "variant"))
    for config in resolved_points(experiment, [f"results.dir={tmp_path}"]):
        if config["variant"] == "full":  # computed by Table 1 under its own labels
            config = dict(config, variant=None, experiment_name="slimllm/table1_main")
        with monkeypatch.context() as old:
            old.setattr(store_module, "NON_SCIENCE_KEYS", old_rule)
            key = run_key(config)
        store.write(
            {
                "run_key": key,
                "status": "done",
                "experiment": config["experiment_name"],
                "method": "slimllm",
                "model": "smollm2-135m",
                "ratio": 0.5,
                "finetune": "none",
                "config": config,
                "metrics": {"ppl/wikitext2": 400.0, "ppl/ptb": 700.0},
            }
        )
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path)}
    dry = ["bash", "experiments/reproduce.sh", "--dry-run", experiment]
    before = subprocess.run(dry, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert before.returncode == 0 and "1 of 1 experiments have runs to do" in before.stdout, before.stderr[-2000:]
    rekeyed = run_module("slimexp.tracking.store", "rekey", "--results-dir", str(tmp_path), timeout=300)
    assert rekeyed.returncode == 0 and "rekey: 4 record(s) moved" in rekeyed.stderr, rekeyed.stderr
    after = subprocess.run(dry, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0 and "0 of 1 experiments have runs to do" in after.stdout, after.stderr[-2000:]


def test_metrics_keep_the_order_the_report_block_gives():
    records = [record_dict("a", "m", 0.2, 10.0, metrics={"ppl/wikitext2": 10.0, "params/achieved_ratio": 0.2})]
    block = {"rows": ["method"], "columns": ["ratio"], "metrics": ["ppl/wikitext2", "params/achieved_ratio"]}
    assert [c[0] for c in experiment_table(records, "exp", block).columns] == ["ppl/wikitext2", "params/achieved_ratio"]
