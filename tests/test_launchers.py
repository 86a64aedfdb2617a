"""Sweeps through Hydra launchers other than the basic one: joblib with 2 workers and
submitit_local. Each must leave complete, valid records and no duplicates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimexp.tracking.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def _sweep(tmp_path, *launcher_args):
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "slimexp.cli", "-m", "experiment=smoke", "model=tiny-llama", "method=dense,magnitude,random",
         "prune.ratio=0.2,0.5", "eval.ppl.max_windows=2", f"hydra.sweep.dir={tmp_path}/multirun", *launcher_args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


def _check_store(tmp_path):
    records = list(ResultsStore(tmp_path / "store").records())
    keys = [r["run_key"] for r in records]
    assert len(keys) == len(set(keys)) == 5  # one dense record serves both ratios
    for record in records:
        assert record["status"] == "done", record.get("error")
        assert record["metrics"]["ppl/wikitext2"] > 1 and record["finished_at"]
        stored = json.loads((tmp_path / "store" / "runs" / f"{record['run_key']}.json").read_text())
        assert stored == record
    assert not list((tmp_path / "store" / "runs").glob(".*.tmp"))


@pytest.mark.parametrize("launcher", ["joblib_local", "submitit_local"])
def test_sweep_through_a_parallel_launcher_leaves_complete_records(tmp_path, launcher):
    args = [f"hydra/launcher={launcher}"]
    if launcher == "submitit_local":
        args += ["hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"]
    result = _sweep(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    if launcher == "joblib_local":  # the jobs really went to two joblib workers
        assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    else:
        assert list((tmp_path / "multirun" / ".submitit").glob("*/*_result.pkl"))
    _check_store(tmp_path)
    again = _sweep(tmp_path, *args)  # everything done: skipped, still no duplicates
    assert again.returncode == 0, again.stderr[-3000:]
    _check_store(tmp_path)


def test_a_killed_reproduce_resumes_without_losing_or_redoing_finished_runs(tmp_path):
    """Kill experiments/reproduce.sh (SIGKILL, whole process group) once two runs of its
    sweep are done; the next invocation keeps those records untouched, computes only what
    is missing and writes the report; a third finds nothing to do."""
    import signal
    import time

    runs = tmp_path / "store" / "runs"
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"}
    args = ["bash", "experiments/reproduce.sh", "smoke", "--", "model=tiny-llama", "eval.ppl.max_windows=2",
            "calib.n_samples=4", "calib.seqlen=32", f"hydra.sweep.dir={tmp_path}/multirun"]
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 600
    done = {}
    while time.time() < deadline and first.poll() is None:
        done = {r["run_key"]: r for r in ResultsStore(tmp_path / "store").records() if r["status"] == "done"}
        if len(done) >= 2:
            break
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert 2 <= len(done) < 7, "the sweep finished before it could be killed"
    before = {key: (runs / f"{key}.json").read_text() for key in done}
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 1 experiments have runs to do" in again.stdout
    records = list(ResultsStore(tmp_path / "store").records())
    assert len(records) == len({r["run_key"] for r in records}) == 7  # dense once + 3 methods × 2 ratios
    assert all(r["status"] == "done" for r in records)
    for key, text in before.items():  # finished runs were skipped, not recomputed
        assert json.loads((runs / f"{key}.json").read_text())["finished_at"] == json.loads(text)["finished_at"]
    assert "wanda_sp" in (tmp_path / "store" / "reports" / "smoke.md").read_text()
    third = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "0 of 1 experiments have runs to do" in third.stdout
