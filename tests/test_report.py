"""Results store, W&B mirror and slimexp-report: a tiny sweep ends in a pandas table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from slimexp.errors import SlimexpError
from slimexp.report.tables import experiment_table, render
from slimexp.tracking.store import ResultsStore, run_key
from slimexp.tracking.wandb_logger import offline_summary

REPO = Path(__file__).resolve().parents[1]


def _record(key, method, ratio, ppl, experiment="exp", status="done", **extra):
    return {"run_key": key, "status": status, "experiment": experiment, "experiments": [experiment], "method": method,
            "model": "m", "ratio": ratio, "finetune": "none", "metrics": {"ppl/wikitext2": ppl}, **extra}


def test_store_writes_atomically_and_tracks_experiments(tmp_path):
    store = ResultsStore(tmp_path)
    store.write(_record("k1", "dense", 0.0, 10.0, status="running"))
    assert not store.is_done("k1")
    store.write(_record("k1", "dense", 0.0, 10.0))
    assert store.is_done("k1") and not list((tmp_path / "runs").glob(".*tmp"))
    store.add_experiment("k1", "other")
    store.add_experiment("k1", "other")
    assert store.read("k1")["experiments"] == ["exp", "other"]
    (tmp_path / "runs" / "broken.json").write_text("{")
    assert [r["run_key"] for r in store.records()] == ["k1"]


def test_run_key_ignores_paths_and_logging_but_not_science():
    base = {"method": {"name": "wanda_sp"}, "prune": {"ratio": 0.2}, "results": {"dir": "a"}, "logger": {"mode": "disabled"},
            "data": {"dir": "/x", "source": "local"}, "calib": {"n_samples": 128, "batch_size": 8}, "tags": []}
    moved = json.loads(json.dumps(base))
    moved["results"]["dir"], moved["logger"]["mode"], moved["data"]["dir"], moved["calib"]["batch_size"] = "b", "online", "/y", 2
    assert run_key(base) == run_key(moved)
    for path, value in ((("prune", "ratio"), 0.5), (("calib", "n_samples"), 64), (("data", "source"), "hub")):
        changed = json.loads(json.dumps(base))
        changed[path[0]][path[1]] = value
        assert run_key(changed) != run_key(base), path


def test_rekey_moves_records_and_models_onto_the_current_rule_and_merges_duplicates(tmp_path):
    store = ResultsStore(tmp_path)
    config = {"method": {"name": "slimllm"}, "prune": {"ratio": 0.5}, "model": {"name": "smollm2-135m"}}
    new = run_key(config)
    model_dir = tmp_path / "models" / "old_a"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_text("weights")
    # Two records hashed under an older rule (e.g. with model.substitutes_for) that are
    # the same computation now; the running one must not win over the done one.
    store.write({**_record("old_a", "slimllm", 0.5, 400.0, experiment="t2"), "config": config,
                 "model_path": str(model_dir)})
    store.write({**_record("old_b", "slimllm", 0.5, None, experiment="t8", status="running"), "config": config})
    moved = store.rekey()
    assert sorted(moved) == [("old_a", new), ("old_b", new)]
    assert [p.stem for p in (tmp_path / "runs").glob("*.json")] == [new]
    record = store.read(new)
    assert record["status"] == "done" and record["run_key"] == new and record["metrics"]["ppl/wikitext2"] == 400.0
    assert sorted(record["experiments"]) == ["t2", "t8"]
    assert Path(record["model_path"]) == tmp_path / "models" / new and (tmp_path / "models" / new / "model.safetensors").exists()
    assert store.rekey() == []


def test_table_layout_reference_and_formats():
    records = [_record("a", "dense", 0.0, 10.0), _record("b", "wanda_sp", 0.2, 20.0), _record("c", "wanda_sp", 0.5, 50.0),
               _record("d", "wanda_sp", 0.2, 99.0, experiment="elsewhere"), _record("e", "wanda_sp", 0.5, 1.0, status="failed")]
    block = {"rows": ["method"], "columns": ["ratio"], "metrics": ["ppl/wikitext2"]}
    table = experiment_table(records, "exp", block)
    assert table.loc["wanda_sp", 0.2] == 20.0 and table.loc["wanda_sp", 0.5] == 50.0 and table.loc["dense", 0.0] == 10.0
    reference = pd.DataFrame({"method": ["wanda_sp"], "ratio": [0.2], "ppl/wikitext2": [18.5]})
    with_paper = experiment_table(records, "exp", block, reference)
    assert with_paper.loc["wanda_sp", (0.2, "paper")] == 18.5
    assert with_paper.loc["wanda_sp", (0.2, "delta")] == pytest.approx(1.5)
    # Published numbers sit beside ours; columns with no published number are left out.
    assert list(with_paper.columns) == [(0.0, "ours"), (0.2, "ours"), (0.2, "paper"), (0.2, "delta"), (0.5, "ours")]
    md = render(with_paper, "md", "T")
    assert "| wanda_sp" in md and "nan" not in md and "–" in md
    assert render(table, "csv").startswith("method")
    assert "\\begin{tabular}" in render(table, "latex")
    with pytest.raises(SlimexpError, match="no done runs"):
        experiment_table(records, "missing", block)


def test_tiny_sweep_then_report_from_the_store_and_from_wandb(tmp_path):
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    science = ["model=tiny-llama", "eval.ppl.max_windows=2", "calib.n_samples=4", "calib.seqlen=32"]
    sweep = subprocess.run(
        [sys.executable, "-m", "slimexp.cli", "-m", "experiment=smoke", *science, "method=dense,magnitude,wanda_sp",
         "prune.ratio=0.2,0.5", "logger=offline", f"logger.dir={tmp_path}",
         f"hydra.sweep.dir={tmp_path}/multirun", "hydra/job_logging=disabled"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    records = list(ResultsStore(tmp_path).records())
    assert len(records) == 5  # one dense record serves both ratios
    assert all(r["status"] == "done" and "smoke" in r["experiments"] for r in records)
    report = subprocess.run([sys.executable, "-m", "slimexp.report.cli", "smoke", "--format", "csv", "--results-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert {l.split(",")[0] for l in lines} >= {"dense", "magnitude", "wanda_sp"}
    # W&B knows runs by id = run key: the smoke sweep's points with the same science
    # overrides name them (its `random` rows were not run, so they are absent there too).
    overrides = [arg for o in science for arg in ("--override", o)]
    mirrored = subprocess.run([sys.executable, "-m", "slimexp.report.cli", "smoke", "--format", "csv", "--source", "wandb",
                               "--wandb-dir", str(tmp_path), *overrides], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert mirrored.returncode == 0, mirrored.stderr
    assert mirrored.stdout == report.stdout
    bad = subprocess.run([sys.executable, "-m", "slimexp.report.cli", "nope", "--results-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown experiment 'nope'" in bad.stderr


def test_wandb_offline_run_mirrors_the_record(tmp_path):
    from test_pipeline import config_for

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
    from test_pipeline import config_for

    from slimexp.pipeline import run

    record = run(config_for(
        tmp_path, "method=magnitude", "eval=zeroshot", "eval.zeroshot.tasks=[piqa,arc_challenge]",
        "eval.zeroshot.limit=3", "logger=offline", f"logger.dir={tmp_path}",
    ))
    metrics = record["metrics"]
    for key in ("acc/piqa", "acc_norm/piqa", "acc/arc_challenge", "acc_norm/arc_challenge", "zeroshot/avg"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["zeroshot/avg"] == pytest.approx((metrics["acc/piqa"] + metrics["acc_norm/arc_challenge"]) / 2)
    protocol = record["protocol"]["zeroshot"]
    assert protocol["limit"] == 3 and protocol["lm_eval_version"] == "0.4.13"
    assert protocol["tasks"]["piqa"]["source"] == "local json"
    assert [row["task"] for row in record["zeroshot"]] == ["piqa", "arc_challenge"]
    assert all(row["n"] == 3 for row in record["zeroshot"])
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{record['run_key']}")
    summary = offline_summary(run_dir / f"run-{record['run_key']}.wandb")
    assert summary["zeroshot/avg"] == pytest.approx(metrics["zeroshot/avg"])
    assert summary["acc/piqa"] == pytest.approx(metrics["acc/piqa"])
    assert summary["zeroshot/_type"] == "table-file"
    table = json.loads((run_dir / "files" / summary["zeroshot/path"]).read_text())
    assert table["columns"] == ["task", "n", "acc", "acc_norm", "paper_metric"]
    assert [row[0] for row in table["data"]] == ["piqa", "arc_challenge"]


def _layered(key, method, ratio, ppl, alpha, widths, mse=None):
    record = _record(key, method, ratio, ppl, experiment="plots", config={"schedule": {"alpha": alpha}}, widths=widths)
    if mse is not None:
        record["analysis"] = {"ffn_output_mse": mse}
    return record


def test_plots_draw_the_records_values_beside_the_paper(tmp_path):
    from slimexp.report.plots import curve_figure, experiment_plots, layers_figure

    records = [
        _layered("a", "slimllm", 0.5, 40.0, 7.0, [{"ratio": 0.4, "ffn_regression_mean_a": 1.1}, {"ratio": 0.6, "ffn_regression_mean_a": 1.3}], [0.1, 0.3]),
        _layered("b", "slimllm", 0.5, 60.0, 1.0, [{"ratio": 0.5, "ffn_regression_mean_a": 1.0}, {"ratio": 0.5, "ffn_regression_mean_a": 1.0}]),
        _layered("c", "slimllm", 0.5, 45.0, 4.0, [{"ratio": 0.45}, {"ratio": 0.55}]),
        _record("d", "dense", 0.0, 20.0, experiment="plots"),
    ]
    reference = pd.DataFrame({"config.schedule.alpha": [1.0, 4.0, 7.0], "ppl/wikitext2": [54.17, 43.36, 37.89]})
    curve = curve_figure(records[:3], {"x": "config.schedule.alpha", "y": ["ppl/wikitext2"]}, reference)
    ours, paper = curve.axes
    assert ours.lines[0].get_xydata().tolist() == [[1.0, 60.0], [4.0, 45.0], [7.0, 40.0]]  # sorted by x
    assert paper.lines[0].get_xydata()[:, 1].tolist() == [54.17, 43.36, 37.89]
    bars = curve_figure(records, {"x": "method", "y": ["ppl/wikitext2"]}, None).axes[0]
    assert sorted(round(p.get_height(), 6) for p in bars.patches) == [20.0, 48.333333]  # mean of the slimllm runs
    layers = layers_figure(records, {"y": ["ratio", "analysis.ffn_output_mse"], "series": ["config.schedule.alpha"]})
    ratio_axis, mse_axis = layers.axes
    assert [line.get_ydata().tolist() for line in ratio_axis.lines] == [[0.5, 0.5], [0.45, 0.55], [0.4, 0.6]]
    assert [line.get_label() for line in ratio_axis.lines] == ["alpha=1.0", "alpha=4.0", "alpha=7.0"]
    assert [line.get_ydata().tolist() for line in mse_axis.lines] == [[0.1, 0.3]]  # dense has no layers
    block = {"rows": ["method"], "metrics": ["ppl/wikitext2"], "plots": [
        {"kind": "curve", "x": "config.schedule.alpha", "y": "ppl/wikitext2"}, {"kind": "layers", "y": ["ffn_regression_mean_a"]}]}
    paths = experiment_plots(records[:3], block, reference, tmp_path, "t5")
    assert [p.name for p in paths] == ["t5_config_schedule_alpha_ppl_wikitext2.png", "t5_layer_ffn_regression_mean_a.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    with pytest.raises(SlimexpError, match="plot kind"):
        experiment_plots(records, {"plots": [{"kind": "pie", "y": "x"}]}, None, tmp_path, "t")
    with pytest.raises(SlimexpError, match="no run of the plot has per-layer values"):
        layers_figure(records[3:], {"y": ["ratio"]})
    assert experiment_plots(records[3:], {"plots": [{"kind": "layers", "y": "ratio"}]}, None, tmp_path, "t") == []
