"""The resource planner: paper models plan offline from their YAML geometry, a plan that
exceeds the memory stops a run before loading, and on a tiny model the plan of the pruning
phase matches what the run measures (host memory within ±25%; time is `make bench`'s)."""

import json
import os

import pytest

from conftest import config_for, run_module
from slimexp.errors import SlimexpError
from slimexp.planner import DTYPE_BYTES, GB, PHASES, Geometry, check_plan, plan_run
from slimexp.precheck import resolved_jobs

RECIPES = ("slimgpt", "slimllm", "flap", "llm_pruner", "wanda_sp")


def test_geometry_counts_the_parameters_of_llama_7b():
    llama = Geometry(4096, 11008, 32, 32, 32, 128, 32000, 2048, tied=False)
    assert abs(llama.params - 6_738_415_616) < 1e6  # huggyllama/llama-7b's parameter count


@pytest.mark.parametrize("model", ["llama-7b", "llama-13b", "llama-30b", "llama3-8b"])
def test_paper_models_plan_offline_for_every_paper_recipe(model):
    for recipe in RECIPES:
        argv = [f"recipe={recipe}/paper", "prune.ratio=0.2", f"model={model}", "scale=paper", "plan.gpu=a100-80gb"]
        [(_, config)] = resolved_jobs(argv)
        plan = plan_run(config)
        assert [p.name for p in plan.phases] == list(PHASES)
        prune = plan.phase("prune")
        assert prune.active and prune.seconds > 0 and prune.accelerator_bytes > 0
        weights = plan.params * DTYPE_BYTES[plan.dtype]  # float16 at scale=paper
        if recipe == "llm_pruner":  # the whole model sits on the GPU for the backward pass
            assert prune.accelerator_bytes > weights
        else:  # one layer at a time: the host holds the model
            assert prune.host_bytes > weights > prune.accelerator_terms["weights"]
    assert plan.device == "a100-80gb" and plan.device_memory_bytes == 80 * GB


def test_slimexp_plan_prints_one_table_per_job(capsys):
    from slimexp.plan_cli import main

    argv = ["-m", "recipe=slimgpt/paper", "prune.ratio=0.2,0.5", "model=llama-7b", "scale=paper", "plan.gpu=a100-80gb"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("llama-7b slimgpt ratio") == 2 and out.count("peak/total") == 2
    for phase in PHASES:
        assert f"\n{phase} " in out


def test_a_plan_over_the_host_memory_stops_the_run_naming_phase_and_knob(tmp_path):
    config = config_for(tmp_path, "method=slimgpt", "plan.host_memory_gb=0.1")
    line = r"^plan: the \w+ phase needs .* GB of host memory, 0\.1 GB available: lower"
    with pytest.raises(SlimexpError, match=line):
        check_plan(config)
    check_plan(config_for(tmp_path, "method=slimgpt", "plan.host_memory_gb=0.1", "plan.enforce=false"))
    check_plan(config_for(tmp_path, "method=slimgpt"))  # the tiny model fits this machine


def test_a_plan_over_the_device_memory_names_the_batch_knob():
    [(_, config)] = resolved_jobs(
        ["recipe=llm_pruner/paper", "model=llama-7b", "scale=paper", "plan.gpu=a100-40gb", "calib.n_samples=64",
         "calib.batch_size=64", "calib.seqlen=2048", "dtype=float16", "plan.host_memory_gb=1000"]
    )  # fmt: skip
    problems = plan_run(config).problems()
    assert len(problems) == 1 and "prune phase" in problems[0] and "lower calib.batch_size" in problems[0]


@pytest.mark.parametrize(("dtype", "knob"), [("float32", "dtype=float16 or bfloat16 (now float32)"),
                                               ("float16", "a GPU with more memory (plan.gpu=...)")])  # fmt: skip
def test_the_weights_knob_offers_half_precision_only_where_the_weights_are_not(dtype, knob):
    """LLM-Pruner's gradient pass holds the whole model: LLaMA-30B does not fit on 40 GB in
    either precision, and only a float32 run can be told to halve its weights."""
    [(_, config)] = resolved_jobs(
        ["recipe=llm_pruner/paper", "model=llama-30b", "scale=paper", "plan.gpu=a100-40gb", f"dtype={dtype}",
         "plan.host_memory_gb=1000"]
    )  # fmt: skip
    [problem] = plan_run(config).problems()
    assert "prune phase" in problem and knob in problem, problem


@pytest.mark.integration
def test_run_records_its_plan_and_the_tiny_model_plan_matches_the_measurement(tmp_path):
    """One subprocess sweep of the five paper recipes on the tiny GQA llama (a fresh process,
    as a real run: the planned host memory is the whole process's), so `integration`. The
    plan's time is recorded beside the measured one but not asserted (no wall-clock
    assertions here: on the shared 2-core machines a tiny run's seconds are contention);
    `make bench` prints planned vs measured time on SmolLM2."""
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    recipes = ",".join(f"{r}/paper" for r in ("wanda_sp", "flap", "slimgpt", "slimllm", "llm_pruner"))
    done = run_module(
        "slimexp.cli", "-m", "model=tiny-llama-gqa", f"recipe={recipes}", "eval=none",
        "calib.n_samples=16", "hydra.sweep.dir=" + str(tmp_path / "multirun"), env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert len(records) == 5
    for record in records:
        planned, metrics = record["plan"]["phases"]["prune"], record["metrics"]
        memory = planned["host_gb"] / metrics["mem/prune_peak_rss_gb"]
        assert 0.75 <= memory <= 1.25, (record["method"], planned["host_gb"], metrics["mem/prune_peak_rss_gb"])
        assert 0 < planned["seconds"] < 600 and metrics["time/prune_s"] > 0
