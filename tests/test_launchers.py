"""Sweeps through Hydra launchers other than the basic one: joblib with 2 workers and
submitit_local. Each must leave complete, valid records and no duplicates; the sweep's
parent process reports the runs that failed in its workers and exits non-zero; a killed
parent leaves no worker computing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimexp.tracking.store import ResultsStore

pytestmark = pytest.mark.integration  # subprocesses: make test-integration (CI runs it)

REPO = Path(__file__).resolve().parents[1]


def _sweep(tmp_path, *launcher_args):
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.cli",
            "-m",
            "experiment=smoke",
            "model=tiny-llama",
            "method=dense,magnitude,random",
            "prune.ratio=0.2,0.5",
            "eval.ppl.max_windows=2",
            f"hydra.sweep.dir={tmp_path}/multirun",
            *launcher_args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
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
    args = [
        "bash",
        "experiments/reproduce.sh",
        "smoke",
        "--",
        "model=tiny-llama",
        "eval.ppl.max_windows=2",
        "calib.n_samples=4",
        "calib.seqlen=32",
        f"hydra.sweep.dir={tmp_path}/multirun",
    ]
    first = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
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


LAUNCHER_ARGS = {
    "basic": [],
    "joblib_local": ["hydra/launcher=joblib_local"],
    "submitit_local": [
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
    ],
}


def _data_with_a_bad_calibration_set(tmp_path):
    """The evaluation sets as they are, and a C4 copy in the wrong schema (`content`, not
    `text`): valid JSON that only a run reading its calibration texts trips over."""
    data = tmp_path / "data"
    (data / "c4").mkdir(parents=True)
    for name in ("wikitext2", "ptb"):
        (data / name).symlink_to(Path(os.environ["SLIMEXP_DATA_DIR"]) / name)  # set by conftest
    rows = [json.dumps({"content": f"calibration document {i} " * 40}) for i in range(20)]
    (data / "c4" / "train.jsonl").write_text("\n".join(rows) + "\n")
    return data


@pytest.mark.parametrize("launcher", ["basic", "joblib_local", "submitit_local"])
def test_a_sweep_with_failed_runs_exits_non_zero_with_the_summary(tmp_path, launcher):
    """magnitude needs no calibration data and finishes; wanda_sp fails inside its job."""
    data = _data_with_a_bad_calibration_set(tmp_path)
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.cli",
            "-m",
            "model=tiny-llama",
            "method=magnitude,wanda_sp",
            "eval.ppl.max_windows=2",
            "calib.n_samples=4",
            "calib.seqlen=32",
            f"data.dir={data}",
            f"hydra.sweep.dir={tmp_path}/multirun",
            *LAUNCHER_ARGS[launcher],
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "slimexp: error: 1 run(s) of the sweep failed" in result.stderr.splitlines()[-1]
    assert "method=wanda_sp" in result.stderr and "KeyError: 'text'" in result.stderr
    if launcher == "joblib_local":
        assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    done = [r for r in ResultsStore(tmp_path / "store").records() if r["status"] == "done"]
    assert [r["method"] for r in done] == ["magnitude"]


def test_a_killed_joblib_sweep_leaves_no_worker_computing(tmp_path):
    """SIGKILL only the sweep's parent while its two joblib workers compute: each worker's
    watchdog sees the parent gone and ends the worker."""
    import signal
    import time

    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slimexp.cli",
            "-m",
            "model=tiny-llama",
            "method=magnitude,random",
            "eval.ppl.max_windows=null",
            f"hydra.sweep.dir={tmp_path}/multirun",
            "hydra/launcher=joblib_local",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        markers = []
        while time.time() < deadline and parent.poll() is None and len(markers) < 2:
            markers = list((tmp_path / "multirun").rglob("slimexp_status.json"))
            time.sleep(0.2)
        assert len(markers) == 2 and parent.poll() is None, "the workers did not start their jobs"
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) >= 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, [(p.pid, p.cmdline()[:4]) for p in alive]
        statuses = [json.loads(m.read_text())["status"] for m in markers]
        assert statuses == ["running", "running"]  # killed mid-run, not finished afterwards
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_watchdog_leaves_jobs_outside_the_parents_process_tree_alone(monkeypatch):
    """SLURM jobs inherit the environment but run on another host, or under no ancestor
    with the parent's pid: no watchdog (it would end them at once)."""
    import socket

    from slimexp import sweep

    monkeypatch.setattr(sweep, "_watchdog", None)
    for parent in (f"elsewhere.example:{os.getppid()}", f"{socket.gethostname()}:999999999", ""):
        monkeypatch.setenv(sweep.SWEEP_PARENT, parent)
        sweep.watch_parent()
        assert sweep._watchdog is None, parent
    assert os.getppid() in sweep._ancestors()
