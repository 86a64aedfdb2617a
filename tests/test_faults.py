"""Bad inputs and faults: one clear line, the right exit code, nothing wrong in the store,
and no file slimexp did not write for the run deleted.

`BAD_INPUTS` runs the CLI's entry point in this process (the pre-check refuses each before
Hydra launches anything); the faults that need a real run (signals, W&B trouble, a
read-only store, concurrent sweeps) run `slimexp` in a subprocess on the tiny model.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, run_module

# transformers' log handler binds sys.stderr when first used: bind it now, not to one
# test's captured stream (closed after that test).
__import__("transformers").utils.logging.get_logger("transformers")

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model=tiny-llama",
    "eval.ppl.max_windows=2",
    "eval.ppl.datasets=[wikitext2]",
    "calib.n_samples=4",
    "calib.seqlen=32",
]


class Evil:
    """Pickles as a call of os.system: what a malicious `.bin` checkpoint holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _data_copy(tmp_path, name="data", damage=None):
    """The shared data sets a tiny run reads, copied; `damage(folder)` breaks one."""
    folder = tmp_path / name
    for sub in ("wikitext2", "ptb", "c4", "bookcorpus", "piqa"):
        shutil.copytree(SHARED_DATA / sub, folder / sub)
    if damage:
        damage(folder)
    return folder


def _truncate(path, keep):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep] if keep >= 0 else data[:keep])


def _local_model(tmp_path, weights="safetensors"):
    """A tiny llama saved as a hub-style local folder (model.source=hub model.hf_id=DIR)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from slimexp.models.loader import load_tokenizer, model_config_by_name

    folder = tmp_path / "local-model"
    cfg = model_config_by_name("tiny-llama")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg["random_config"]))
    model.save_pretrained(folder, safe_serialization=weights == "safetensors")
    load_tokenizer(cfg).save_pretrained(folder)
    return folder


def _damaged_safetensors(tmp_path):
    folder = _local_model(tmp_path)
    _truncate(folder / "model.safetensors", -1000)
    return ["model=tiny-llama", "model.source=hub", f"model.hf_id={folder}"]


def _malicious_pickle(tmp_path):
    folder = _local_model(tmp_path, weights="bin")
    for path in folder.glob("*.safetensors"):
        path.unlink()
    torch.save({"model.embed_tokens.weight": Evil(tmp_path / "pwned")}, folder / "pytorch_model.bin")
    return ["model=tiny-llama", "model.source=hub", f"model.hf_id={folder}"]


def _foreign_checkpoint_folder(tmp_path):
    """A user's folder where this run's pruned model would go (<model_dir>/<run_key>)."""
    from hydra import compose, initialize_config_dir

    from slimexp.config import register_configs
    from slimexp.pipeline import resolve_config
    from slimexp.tracking.store import run_key

    args = [*TINY, "method=magnitude", "results.save_model=true", f"results.model_dir={tmp_path / 'models'}"]
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = resolve_config(
            __import__("omegaconf").OmegaConf.to_container(compose("config", overrides=args), resolve=True)
        )
    target = tmp_path / "models" / run_key(config)
    (target / "sub").mkdir(parents=True)
    (target / "important.txt").write_text("mine")
    return args


def _data_dir_case(damage):
    return lambda tmp_path: [*TINY, "method=magnitude", f"data.dir={_data_copy(tmp_path, damage=damage)}"]


def _truncated_jsonl(folder):
    _truncate(folder / "wikitext2" / "test.jsonl", -7)


def _non_utf8_jsonl(folder):
    path = folder / "wikitext2" / "test.jsonl"
    path.write_bytes(path.read_bytes().replace(b"the", b"th\xe9", 1))


def _no_piqa(folder):
    shutil.rmtree(folder / "piqa")


def _empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    return [*TINY, "method=magnitude", f"data.dir={tmp_path / 'empty'}"]


# id: (arguments, or a function of tmp_path returning them; the one-line message's fragment)
BAD_INPUTS = {
    "unknown_method": (["method=foo"], "unknown method 'foo'; choose from:"),
    "unknown_model": (["model=foo"], "unknown model 'foo'"),
    "unknown_experiment": (["experiment=nope"], "unknown experiment 'nope'"),
    "unknown_finetune": (["finetune=lora"], "unknown finetune 'lora'; choose from: lora_slimgpt, lora_slimllm, none"),
    "unknown_recipe": (["recipe=slimllm/ratio50"], "unknown recipe 'slimllm/ratio50'"),
    "typo_in_key": ([*TINY, "prune.ratoi=0.2"], "unknown key prune.ratoi (did you mean prune.ratio?)"),
    "plus_on_schema_key": (
        [*TINY, "+prune.ratoi=0.2"],
        "unknown key prune.ratoi (did you mean prune.ratio?): '+' cannot add",
    ),
    "plus_at_the_top": ([*TINY, "+seeed=1"], "unknown key seeed (did you mean seed?)"),
    "plus_on_existing_key": ([*TINY, "+prune.ratio=0.3"], "prune.ratio exists, so drop the '+'"),
    "ratio_not_a_number": (
        [*TINY, "prune.ratio=abc"],
        "prune.ratio=abc: Value 'abc' of type 'str' could not be converted to Float",
    ),
    "count_not_a_number": ([*TINY, "calib.n_samples=many"], "calib.n_samples=many"),
    "list_not_a_list": ([*TINY, "eval.ppl.datasets=wikitext2"], "eval.ppl.datasets=wikitext2"),
    "method_setting_type": ([*TINY, "method.percdamp=abc"], "method.percdamp must be a number, got 'abc'"),
    "method_setting_option": (
        [*TINY, "method.head_score=exactt"],
        "head_score must be one of ('authors', 'exact'), got 'exactt'",
    ),
    "method_setting_unknown": ([*TINY, "+method.foo=1"], "unknown setting method.foo for method 'slimgpt'"),
    "method_setting_typo": (
        [*TINY, "method.percdam=0.1"],
        "unknown key method.percdam (did you mean method.percdamp?)",
    ),
    "schedule_setting": ([*TINY, "schedule=log_increase", "schedule.r_min=1.5"], "r_min must lie in [0, 1)"),
    "variant_of_another_method": ([*TINY, "variant=slimllm/no_greedy_search"], "unknown setting method.greedy_search"),
    "ratio_too_high": ([*TINY, "prune.ratio=1.0"], "prune.ratio must be in [0, 1), got 1.0"),
    "ratio_negative": ([*TINY, "prune.ratio=-0.1"], "prune.ratio must be in [0, 1)"),
    "bad_point_in_a_sweep": (
        ["-m", *TINY, "method=magnitude", "prune.ratio=0.2,1.5"],
        "prune.ratio must be in [0, 1), got 1.5",
    ),
    "sweep_without_multirun": ([*TINY, "prune.ratio=0.2,0.5"], "needs -m (--multirun)"),
    "unpublished_ratio_of_a_recipe": (
        [*TINY, "recipe=slimllm/paper", "prune.ratio=0.33"],
        "no published setting for prune.ratio=0.33",
    ),
    "unknown_ppl_dataset": ([*TINY, "eval.ppl.datasets=[foo]"], "unknown data set 'foo'"),
    "unknown_calib_dataset": ([*TINY, "calib.dataset=foo"], "unknown data set 'foo'"),
    "unknown_zero_shot_task": (
        [*TINY, "eval=zeroshot", "eval.zeroshot.tasks=[foo]"],
        "unknown zero-shot task(s) ['foo']",
    ),
    "no_calibration_samples": ([*TINY, "calib.n_samples=0"], "calib.n_samples ≥ 1"),
    "ppl_seqlen_above_context": (
        [*TINY, "eval.ppl.seqlen=1024", "method=magnitude"],
        "eval.ppl.seqlen 1024 exceeds the model's context of 512",
    ),
    "calib_seqlen_above_context": (
        # data=hub: at scale=paper the shared folder's C4 head slice would stop the run first
        [*TINY, "scale=paper", "calib.seqlen=1024", "method=wanda_sp", "data=hub"],
        "calib.seqlen 1024 exceeds the model's context of 512",
    ),
    "unsupported_architecture": ([*TINY, "model.random_config.model_type=gpt2"], "architecture 'gpt2' has no adapter"),
    "cuda_without_cuda": ([*TINY, "device=cuda"], "device 'cuda' requested but CUDA is not available"),
    "unknown_device": ([*TINY, "device=tpu"], "unknown device 'tpu'"),
    "logger_mode": ([*TINY, "logger.mode=loud"], "logger.mode must be disabled, offline or online"),
    "missing_data_dir": ([*TINY, "data.dir=/nonexistent/data"], "data dir '/nonexistent/data' does not exist"),
    "empty_data_dir": (_empty_dir, "wikitext2/test not found in data dir"),
    "truncated_jsonl": (_data_dir_case(_truncated_jsonl), "test.jsonl line 4358 is a truncated JSON record"),
    "non_utf8_jsonl": (_data_dir_case(_non_utf8_jsonl), "is not UTF-8 text"),
    "missing_zero_shot_file": (
        lambda tmp: [
            *TINY,
            "method=magnitude",
            "eval=zeroshot",
            "eval.zeroshot.tasks=[piqa]",
            f"data.dir={_data_copy(tmp, damage=_no_piqa)}",
        ],
        "zero-shot task piqa:",
    ),
    "truncated_safetensors": (_damaged_safetensors, "model.safetensors is truncated"),
    "malicious_pickle": (
        _malicious_pickle,
        "pytorch_model.bin is a pickle that would run posix.system when loaded: refused",
    ),
    "foreign_folder_at_the_model_path": (_foreign_checkpoint_folder, "exists and is not slimexp's checkpoint of run"),
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A results folder holding a done record and a colleague's files, which must survive."""
    root = tmp_path / "store"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "0123456789abcdef.json").write_text(json.dumps({"run_key": "0123456789abcdef", "status": "done"}))
    (root / "notes.txt").write_text("a colleague's notes")
    monkeypatch.setenv("SLIMEXP_RESULTS_DIR", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def _store_unchanged(root):
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["0123456789abcdef.json"]
    assert (root / "notes.txt").read_text() == "a colleague's notes"


def test_there_are_forty_faults_in_this_file():
    assert len(BAD_INPUTS) + len(RUN_FAULTS) >= 40


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_is_one_line_before_anything_loads(case, store, tmp_path, monkeypatch, capsys):
    from slimexp import cli

    args, fragment = BAD_INPUTS[case]
    args = args(tmp_path) if callable(args) else args
    capsys.readouterr()
    monkeypatch.setattr(
        sys, "argv", ["slimexp", *args, f"hydra.run.dir={tmp_path}/hydra", f"hydra.sweep.dir={tmp_path}/multirun"]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("slimexp: error: "), lines
    assert fragment in lines[0], lines[0]
    _store_unchanged(store)
    assert not (tmp_path / "pwned").exists()
    if case == "foreign_folder_at_the_model_path":
        (folder,) = (tmp_path / "models").iterdir()
        assert (folder / "important.txt").read_text() == "mine" and (folder / "sub").is_dir()


def slimexp(args, results, extra_env=None, timeout=300, hydra_dir=None, **kwargs):
    env = {
        **os.environ,
        "SLIMEXP_RESULTS_DIR": str(results),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    hydra_dir = hydra_dir or results
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.cli",
            *args,
            f"hydra.run.dir={hydra_dir}/hydra",
            f"hydra.sweep.dir={hydra_dir}/multirun",
            "hydra/job_logging=disabled",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def _records(results):
    runs = Path(results) / "runs"
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))] if runs.is_dir() else []


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("slimexp: error:")]


@pytest.mark.integration
def test_calibration_larger_than_the_data_is_one_line_and_leaves_no_record(tmp_path):
    # A full split can still be smaller than the calibration asks; the BookCorpus slice is
    # marked full so that scale=paper's head-slice check lets the run get that far.
    data = _data_copy(tmp_path)
    entry = {**json.loads((SHARED_DATA / "MANIFEST.json").read_text())["bookcorpus/train.jsonl"], "slice": "full"}
    (data / "MANIFEST.json").write_text(json.dumps({"bookcorpus/train.jsonl": entry}))
    result = slimexp(
        [*TINY, "scale=paper", "method=wanda_sp", "calib=bookcorpus", "calib.n_samples=1000", "calib.seqlen=64"]
        + [f"data.dir={data}"],
        tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "calibration larger than the data: bookcorpus holds" in line
    assert _records(tmp_path) == []  # it never could run: no failed record either


@pytest.mark.integration
def test_an_unreachable_hub_is_one_line_and_no_done_record(tmp_path):
    result = slimexp([*TINY, "data=hub", "method=magnitude"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "cannot load wikitext2/test from the Hugging Face hub" in line
    assert not [r for r in _records(tmp_path) if r["status"] == "done"]


@pytest.mark.integration
def test_a_users_model_dir_is_never_deleted_and_every_run_gets_its_own_folder(tmp_path):
    users = tmp_path / "my-models"
    (users / "sub").mkdir(parents=True)
    (users / "important.txt").write_text("mine")
    args = [
        "-m",
        *TINY,
        "method=magnitude",
        "prune.ratio=0.2,0.5",
        "results.save_model=true",
        f"results.model_dir={users}",
    ]
    first = slimexp(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    records = _records(tmp_path)
    assert len(records) == 2 and {Path(r["model_path"]).parent for r in records} == {users}
    assert {Path(r["model_path"]).name for r in records} == {r["run_key"] for r in records}
    again = slimexp([*args, "runner.skip_done=false"], tmp_path)  # its own checkpoints: replaced
    assert again.returncode == 0, again.stderr[-2000:]
    assert (users / "important.txt").read_text() == "mine" and (users / "sub").is_dir()
    import slimexp as package

    for record in _records(tmp_path):
        assert package.load_pruned(record["model_path"]) is not None
    assert sorted(p.name for p in users.iterdir()) == sorted(["important.txt", "sub", *(r["run_key"] for r in records)])


SLOW_SWEEP = ["-m", *TINY, "method=dense,magnitude", "eval.ppl.max_windows=300", "eval.ppl.batch_size=1"]


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_sweep_killed_mid_run_keeps_finished_records_and_redoes_only_the_killed_one(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimexp.cli", *SLOW_SWEEP, f"hydra.sweep.dir={tmp_path}/multirun"],
        cwd=REPO,
        env={**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        statuses = {r["method"]: r["status"] for r in _records(tmp_path)}
        if statuses.get("dense") == "done" and statuses.get("magnitude") == "running":
            break
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) != 0
    records = {r["method"]: r for r in _records(tmp_path)}
    assert records["dense"]["status"] == "done", "the sweep was not killed mid-run"
    killed = records["magnitude"]
    if sig == signal.SIGTERM:
        assert killed["status"] == "failed" and "Terminated: terminated by signal SIGTERM" in killed["error"]
        assert killed["finished_at"]
    else:
        assert killed["status"] == "running"  # whole, never half-written
    assert not list((tmp_path / "runs").glob(".*.tmp"))
    redone = slimexp(SLOW_SWEEP, tmp_path)
    assert redone.returncode == 0, redone.stderr[-2000:]
    after = {r["method"]: r for r in _records(tmp_path)}
    assert after["dense"] == records["dense"]  # finished: untouched, not recomputed
    assert after["magnitude"]["status"] == "done" and after["magnitude"]["run_key"] == killed["run_key"]


@pytest.mark.integration
def test_two_concurrent_sweeps_on_one_store_leave_one_whole_record_per_run(tmp_path):
    args = ["-m", *TINY, "method=magnitude,random", "prune.ratio=0.2,0.5"]
    first, second = (
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slimexp.cli",
                *args,
                f"hydra.sweep.dir={tmp_path}/m{i}",
                "hydra/job_logging=disabled",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        )
        for i in (1, 2)
    )
    outputs = [proc.communicate(timeout=600) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [err[-2000:] for _, err in outputs]
    records = _records(tmp_path)
    assert len(records) == 4 and all(r["status"] == "done" for r in records)
    assert not list((tmp_path / "runs").glob(".*.tmp"))


@pytest.mark.integration
def test_a_read_only_store_skips_and_reports_and_refuses_to_compute_in_one_line(tmp_path):
    store = tmp_path / "store"
    done = slimexp([*TINY, "method=magnitude"], store)
    assert done.returncode == 0, done.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in (store / "runs").iterdir()}
    readonly, mounted = _read_only_view(store, tmp_path / "ro")
    try:
        skipped = slimexp([*TINY, "method=magnitude"], readonly, hydra_dir=tmp_path)
        assert skipped.returncode == 0 and "magnitude" in skipped.stdout, skipped.stderr[-2000:]
        refused = slimexp([*TINY, "method=random"], readonly, hydra_dir=tmp_path)
        assert refused.returncode == 2
        (line,) = _error_lines(refused.stderr)
        assert f"results folder '{readonly}' is not writable" in line
        pending = subprocess.run(
            [sys.executable, "-m", "slimexp.catalog", "pending", "smoke", "--override", "model=tiny-llama"],
            cwd=REPO,
            env={**os.environ, "SLIMEXP_RESULTS_DIR": str(readonly)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pending.returncode == 0 and pending.stdout.strip() == "smoke", pending.stderr[-2000:]
    finally:
        _release(readonly, mounted)
    assert {p.name: p.read_bytes() for p in (store / "runs").iterdir()} == before


def _read_only_view(source, target):
    """A read-only bind mount of `source` (root ignores file modes); else the modes."""
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True).returncode == 0
    if mounted and subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True).returncode == 0:
        return target, True
    if mounted:
        subprocess.run(["umount", str(target)])
    if os.geteuid() == 0:
        pytest.skip("cannot make a read-only folder here (root without mount)")
    for path in [source, *source.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return source, False


def _release(view, mounted):
    if mounted:
        subprocess.run(["umount", str(view)], check=True)
    else:
        for path in [view, *view.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


@pytest.mark.integration
def test_records_and_models_follow_the_umask_and_stale_temporaries_are_cleaned(tmp_path):
    from slimexp.files import temporary_name

    runs = tmp_path / "runs"
    runs.mkdir(parents=True)
    dead = runs / f".x.json~{os.uname().nodename.replace('~', '-')}~999999~dead.tmp"
    dead.write_text("{")
    live = temporary_name(runs / "y.json")  # this test's own pid: a live writer
    live.write_text("{")
    old = runs / ".z.json.abc123.tmp"  # an older name (mkstemp), last touched two hours ago
    old.write_text("{")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    result = subprocess.run(
        [
            "bash",
            "-c",
            f"umask 002 && exec {sys.executable} -m slimexp.cli "
            + " ".join(
                [
                    *TINY,
                    "method=magnitude",
                    "results.save_model=true",
                    f"hydra.run.dir={tmp_path}/hydra",
                    "hydra/job_logging=disabled",
                ]
            ),
        ],
        cwd=REPO,
        env={**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert (runs / f"{record['run_key']}.json").stat().st_mode & 0o777 == 0o664
    model = Path(record["model_path"])
    assert model.stat().st_mode & 0o777 == 0o775 and (model / "model.safetensors").stat().st_mode & 0o777 == 0o664
    assert not dead.exists() and not old.exists() and live.exists()


@pytest.mark.integration
def test_an_unreadable_record_of_the_run_is_recomputed_and_others_are_reported_with_a_warning(tmp_path):
    first = slimexp([*TINY, "method=magnitude"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (record,) = _records(tmp_path)
    (tmp_path / "runs" / f"{record['run_key']}.json").write_text('{"run_key": "trunc')
    (tmp_path / "runs" / "someone-elses.json").write_bytes(b"\xff")
    again = slimexp([*TINY, "method=magnitude"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "runs" / f"{record['run_key']}.json").read_text())["status"] == "done"
    assert (tmp_path / "runs" / "someone-elses.json").read_bytes() == b"\xff"  # not ours: left alone
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimexp.report.cli",
            "smoke",
            "--results-dir",
            str(tmp_path),
            "--override",
            "model=tiny-llama",
            "--override",
            "eval.ppl.max_windows=2",
            "--override",
            "eval.ppl.datasets=[wikitext2]",
            "--override",
            "calib.n_samples=4",
            "--override",
            "calib.seqlen=32",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "magnitude" in report.stdout
    outside = run_module("slimexp.report.cli", "../conf/config", "--results-dir", str(tmp_path), timeout=300)
    assert outside.returncode == 2 and "unknown experiment '../conf/config'" in outside.stderr


@pytest.mark.integration
def test_wandb_that_cannot_start_costs_no_science(tmp_path):
    """logger=online with no API key and an unreachable server: one warning, a done record."""
    env = {
        "WANDB_API_KEY": "",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_DIR": str(tmp_path / "wandb-home"),
        "HOME": str(tmp_path / "home"),
    }
    result = slimexp(
        [*TINY, "method=magnitude", "logger=online", f"logger.dir={tmp_path}", "logger.init_timeout=5"],
        tmp_path,
        extra_env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["status"] == "done" and record["metrics"]["ppl/wikitext2"] > 1
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("slimexp: warning: W&B trouble")]
    assert "no API key" in warning and "wandb sync" in warning
    assert record["wandb"]["mode"] == "offline" and "no API key" in record["wandb"]["trouble"]


RUN_FAULTS = [
    "calibration_larger_than_data",
    "hub_unreachable",
    "users_model_dir",
    "sigterm",
    "sigkill",
    "concurrent_sweeps",
    "read_only_store",
    "umask",
    "stale_temporaries",
    "unreadable_record_of_the_run",
    "unreadable_record_in_a_report",
    "report_outside_the_catalog",
    "wandb_without_key_or_server",
]


def test_the_pickle_check_passes_a_plain_state_dict_and_refuses_code(tmp_path):
    """A .bin of tensors passes (torch's own storages and rebuild functions); one naming
    anything callable beyond those, torch's own included, is refused without being loaded."""
    import collections

    from slimexp.checks import check_pickle_now
    from slimexp.errors import SlimexpError

    plain = collections.OrderedDict(w=torch.randn(3, 3), h=torch.ones(2, dtype=torch.float16), i=torch.arange(3))
    torch.save(plain, tmp_path / "plain.bin")
    check_pickle_now(tmp_path / "plain.bin")
    torch.save({"w": Evil(tmp_path / "pwned")}, tmp_path / "evil.bin")
    with pytest.raises(SlimexpError, match="posix.system"):
        check_pickle_now(tmp_path / "evil.bin")

    class TorchCall:
        def __reduce__(self):
            return (torch.hub.load_state_dict_from_url, ("http://127.0.0.1:9/x.pt",))

    torch.save({"w": TorchCall()}, tmp_path / "torch_call.bin")
    with pytest.raises(SlimexpError, match="torch.hub.load_state_dict_from_url"):
        check_pickle_now(tmp_path / "torch_call.bin")
    assert not (tmp_path / "pwned").exists()
