"""The command line: bad input gives one clear line and no done record; runs resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny-llama", "eval.ppl.max_windows=4", "eval.ppl.datasets=[wikitext2]", "calib.n_samples=4", "calib.seqlen=32"]


def slimexp(args, results, extra_env=None, **kwargs):
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(results), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "slimexp.cli", *args, "hydra.run.dir=" + str(results / "hydra"), "hydra/job_logging=disabled"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kwargs,
    )


def records(results):
    return [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")] if (results / "runs").exists() else []


BAD_INPUT = {
    "unknown_method": (["method=foo"], "unknown method 'foo'"),
    "unknown_model": (["model=foo"], "unknown model 'foo'"),
    "unknown_dataset": ([*TINY, "eval.ppl.datasets=[foo]"], "unknown data set 'foo'"),
    "unknown_calib_dataset": ([*TINY, "calib.dataset=foo"], "unknown data set 'foo'"),
    "ratio_too_high": ([*TINY, "prune.ratio=1.0"], "prune.ratio must be in [0, 1)"),
    "ratio_negative": ([*TINY, "prune.ratio=-0.1"], "prune.ratio must be in [0, 1)"),
    # scale=paper: scale=cpu caps BookCorpus at the windows the local slice holds
    "calibration_larger_than_data": ([*TINY, "scale=paper", "calib=bookcorpus", "calib.n_samples=1000", "calib.seqlen=64"],
                                     "calibration larger than the data"),
    "seqlen_above_context": ([*TINY, "eval.ppl.seqlen=1024", "method=magnitude"], "exceeds the model's context of 512"),
    "missing_data_dir": ([*TINY, "data.dir=/nonexistent/data"], "data dir '/nonexistent/data' does not exist"),
    "hub_unreachable": ([*TINY, "data=hub", "method=magnitude"], "cannot load wikitext2/test from the Hugging Face hub"),
    "unsupported_architecture": ([*TINY, "model.random_config.model_type=gpt2"], "architecture 'gpt2' has no adapter"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_clear_line(case, tmp_path):
    args, message = BAD_INPUT[case]
    result = slimexp(args, tmp_path)
    assert result.returncode != 0
    error_lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert error_lines and error_lines[-1].startswith("slimexp: error: "), result.stderr[-2000:]
    assert message in error_lines[-1]
    assert "Traceback" not in result.stderr
    assert not [r for r in records(tmp_path) if r["status"] == "done"]


def test_a_killed_run_is_redone(tmp_path):
    args = ["model=tiny-llama", "eval.ppl.max_windows=400", "eval.ppl.datasets=[wikitext2]", "eval.ppl.batch_size=1", "calib.n_samples=4", "calib.seqlen=32"]
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimexp.cli", *args, f"hydra.run.dir={tmp_path}/hydra"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not records(tmp_path):
        time.sleep(0.2)
    time.sleep(3)  # inside the run: loading, pruning or evaluating
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = records(tmp_path)
    assert killed["status"] == "running"
    result = slimexp(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (redone,) = records(tmp_path)
    assert redone["status"] == "done" and redone["run_key"] == killed["run_key"]
