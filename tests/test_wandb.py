"""W&B is a mirror, never a reason for a run to fail: no API key, an unreachable server or
an error mid-run each give one warning and fall back (offline, else off), and the local
record stays complete. Offline runs give back the config the store holds."""

import json

import pytest

from slimexp.tracking.wandb_logger import WandbLogger, offline_config, offline_summary

KEY = "abcdef012345"


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """No credentials and no server of the developer's own; wandb's process-wide state
    (settings read from the environment once, the service process) reset around each test."""
    wandb = pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    wandb.teardown()
    yield
    wandb.teardown()


def _warnings(capsys):
    """The W&B warning lines slimexp printed on stderr (prefix removed)."""
    prefix = "slimexp: warning: "
    return [line[len(prefix) :] for line in capsys.readouterr().err.splitlines() if line.startswith(prefix + "W&B")]


def _start(tmp_path, **cfg):
    """Start a W&B run; returns (logger, run id, the (mode, init_timeout) of each init tried)."""
    logger = WandbLogger({"mode": "online", "project": "slimexp-test", "dir": str(tmp_path), **cfg})
    tried, init = [], logger._init

    def spy(mode, *args):
        tried.append((mode, float(logger.cfg.get("init_timeout") or 30)))
        return init(mode, *args)

    logger._init = spy
    run_id = logger.start(KEY, "group", "magnitude", ["t"], {"method": {"name": "magnitude"}})
    return logger, run_id, tried


def test_online_without_api_key_falls_back_to_offline_at_once(tmp_path, capsys):
    logger, run_id, tried = _start(tmp_path)
    with logger:
        logger.log({"loss": 1.0})
    assert run_id == KEY and logger.effective_mode == "offline"
    assert [mode for mode, _ in tried] == ["offline"]  # no online attempt to wait for (it failed after ~19 s)
    (warning,) = _warnings(capsys)
    assert "no API key" in warning and "wandb sync" in warning
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{KEY}/run-{KEY}.wandb"))


def test_online_with_an_unreachable_server_falls_back_within_init_timeout(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    logger, run_id, tried = _start(tmp_path, init_timeout=5)
    with logger:
        logger.summary({"ppl": 3.0})
    assert run_id == KEY and logger.effective_mode == "offline"
    assert tried == [("online", 5.0), ("offline", 5.0)]  # the online wait bounded by init_timeout, then offline
    (warning,) = _warnings(capsys)
    assert warning.startswith("W&B trouble (online: ") and "wandb sync" in warning
    (run_file,) = (tmp_path / "wandb").glob(f"offline-run-*-{KEY}/run-{KEY}.wandb")
    assert offline_summary(run_file)["ppl"] == 3.0


def test_when_offline_fails_too_wandb_is_off_and_start_does_not_raise(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(WandbLogger, "_init", broken)
    logger, run_id, _ = _start(tmp_path)
    with logger:
        logger.log({"loss": 1.0})
        logger.table("zeroshot", ["task"], [["piqa"]])
    assert run_id is None and logger.effective_mode == "disabled" and logger.run is None
    (warning,) = _warnings(capsys)
    assert "no API key" in warning and "offline: disk full" in warning and "W&B is off" in warning


@pytest.mark.parametrize("failing", ["log", "finish"])
def test_a_failure_mid_run_warns_once_and_turns_wandb_off(tmp_path, capsys, monkeypatch, failing):
    logger = WandbLogger({"mode": "offline", "dir": str(tmp_path)})
    assert logger.start(KEY, "group", "magnitude", [], {}) == KEY

    def broken(*args, **kwargs):
        raise RuntimeError("connection reset")

    monkeypatch.setattr(logger.run, failing, broken)
    with logger:
        for step in range(3):  # all after the first failure are no-ops
            logger.log({"loss": 1.0}, step=step)
            logger.summary({"ppl": 3.0})
            logger.table("zeroshot", ["task"], [["piqa"]])
    (warning,) = _warnings(capsys)
    assert f"({failing}: connection reset)" in warning and "off for the rest of this run" in warning
    assert logger.run is None and logger.trouble == f"{failing}: connection reset"


def test_offline_config_reads_config_changed_mid_run_into_nested_dicts(tmp_path):
    logger = WandbLogger({"mode": "offline", "dir": str(tmp_path)})
    with logger:
        logger.start(KEY, "group", "magnitude", [], {"method": {"name": "magnitude"}, "seed": 0})
        logger.run.config.update({"prune": {"ratio": 0.5}, "seed": 1}, allow_val_change=True)
    (run_file,) = (tmp_path / "wandb").glob(f"offline-run-*-{KEY}/run-{KEY}.wandb")
    assert offline_config(run_file) == {"method": {"name": "magnitude"}, "prune": {"ratio": 0.5}, "seed": 1}


def test_pipeline_run_online_without_key_completes_with_a_full_record(tmp_path, capsys):
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(config_for(tmp_path, "method=magnitude", "logger=online", f"logger.dir={tmp_path}"))
    stored = json.loads((tmp_path / "runs" / f"{record['run_key']}.json").read_text())
    assert stored["status"] == "done" and stored["metrics"]["ppl/wikitext2"] > 1
    assert stored["wandb_id"] == record["run_key"]  # the offline fallback run
    assert len(_warnings(capsys)) == 1


def test_offline_run_gives_back_the_stored_nested_config(tmp_path):
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(
        config_for(
            tmp_path, "method=slimllm", "variant=slimllm/no_feature_space", "logger=offline", f"logger.dir={tmp_path}"
        )
    )
    assert record["config"]["method"]["feature_space"] is False and record["config"]["variant"] == "no_feature_space"
    (run_file,) = (tmp_path / "wandb").glob(f"offline-run-*-{record['run_key']}/run-{record['run_key']}.wandb")
    stored = json.loads((tmp_path / "runs" / f"{record['run_key']}.json").read_text())
    assert offline_config(run_file) == stored["config"]
