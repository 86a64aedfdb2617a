"""Weights & Biases mirror of a run: one W&B run per job, `id = run_key`, resumable.

`logger.mode=disabled` (tests, default) never imports wandb. Offline runs are written
under `logger.dir` and can be synced later. The run is always finished, also when the job
fails (exit code 1), so no W&B run stays "running" forever. The API key comes from
`wandb login` / WANDB_API_KEY, never from a config or a record.

W&B is a mirror, never a reason for a run to fail: trouble at start (no API key, a server
that does not answer within `logger.init_timeout`) falls back to offline, else to no W&B;
trouble mid-run turns W&B off for the rest of the run. Either way one warning line, and
the local record stays complete (`effective_mode` says what W&B ran as).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Summary key holding the record's report fields (protocol, widths, analysis, ...) as JSON,
# so `slimexp-report --source wandb` can rebuild tables and plots from W&B alone.
RECORD_KEY = "slimexp/record"


def _has_credentials() -> bool:
    """Whether wandb finds an API key (environment, netrc, settings) for its host without
    prompting: without one, an online `wandb.init` fails only after a long wait."""
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:  # another wandb version: let init try, bounded by init_timeout
        return True
    try:
        host = wandb_setup.singleton().settings.base_url
        found = wbauth.authenticate_session(host=host, source="slimexp", prompt=False, update_session=False)
    except Exception:  # a malformed key or netrc counts as none
        return False
    return found is not None


def _teardown_wandb() -> None:
    # A failed init leaves its run id claimed in wandb's service process, so the offline
    # retry with the same id needs a fresh one; teardown may sys.exit on a service error.
    try:
        import wandb

        wandb.teardown()
    except (Exception, SystemExit):
        pass


class WandbLogger:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = dict(cfg)
        self.mode = self.cfg.get("mode", "disabled")
        if self.mode not in ("disabled", "offline", "online"):
            from slimexp.errors import SlimexpError

            raise SlimexpError(f"logger.mode must be disabled, offline or online, got '{self.mode}'")
        self.run = None
        # What W&B ran as once start() returned: online, offline (asked for, or the
        # fallback) or disabled; `trouble` holds the reason of a fallback or a mid-run stop.
        self.effective_mode = "disabled"
        self.trouble: str | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, key: str, group: str, job_type: str, tags: list[str], config: dict[str, Any]) -> str | None:
        """Start the W&B run; its id, or None when W&B is off. W&B trouble never raises."""
        if not self.enabled:
            return None
        modes = ["online", "offline"] if self.mode == "online" else ["offline"]
        reasons = []
        if self.mode == "online" and not _has_credentials():
            reasons.append("online: no API key (set WANDB_API_KEY or run `wandb login`)")
            modes = ["offline"]
        for mode in modes:
            try:
                self.run = self._init(mode, key, group, job_type, tags, config)
            except Exception as err:
                reasons.append(f"{mode}: {_one_line(err)}")
                self.run = None
                _teardown_wandb()
                continue
            self.effective_mode = mode
            break
        if reasons:
            self._warn_fallback(reasons, key)
        return None if self.run is None else self.run.id

    def _init(self, mode: str, key: str, group: str, job_type: str, tags: list[str], config: dict[str, Any]):
        import wandb

        # quiet: else online init first prints who is logged in, asking the server with
        # retries that init_timeout does not bound (~10 s more when it does not answer).
        # silent: a fallback's own warning line already names the folder to sync.
        settings = wandb.Settings(
            init_timeout=float(self.cfg.get("init_timeout") or 30), quiet=mode == "online", silent=mode != self.mode
        )
        return wandb.init(
            project=self.cfg.get("project", "slimexp"),
            entity=self.cfg.get("entity"),
            dir=self.cfg.get("dir"),
            mode=mode,
            id=key,
            resume="allow",
            group=group,
            job_type=job_type,
            tags=list(tags),
            config=config,
            reinit="finish_previous",
            settings=settings,
        )

    def _warn_fallback(self, reasons: list[str], key: str) -> None:
        self.trouble = "; ".join(reasons)
        if self.effective_mode == "offline":
            folder = getattr(self.run.settings, "sync_dir", None) or f"wandb/offline-run-*-{key}"
            then = f"logging offline, sync later with: wandb sync {folder}"
        else:
            then = "W&B is off for this run"
        _warn(f"W&B trouble ({self.trouble}): {then}; the local record is complete")

    def _guarded(self, what: str, call) -> None:
        """W&B calls mid-run: the first failure warns once and turns W&B off for the rest."""
        if self.run is None:
            return
        try:
            call()
        except Exception as err:
            self.trouble = f"{what}: {_one_line(err)}"
            run, self.run = self.run, None
            if what != "finish":  # best effort, so the W&B run does not stay "running"
                try:
                    run.finish(exit_code=1)
                except Exception:
                    pass
            _warn(f"W&B trouble ({self.trouble}): W&B is off for the rest of this run; the local record is complete")

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._guarded("log", lambda: self.run.log(metrics, step=step))

    def summary(self, metrics: dict[str, Any]) -> None:
        self._guarded("summary", lambda: self.run.summary.update(metrics))

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        def log_table():
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})

        self._guarded("table", log_table)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._guarded("finish", lambda: self.run.finish(exit_code=0 if exc_type is None else 1))
        self.run = None
        if self.effective_mode != "disabled":
            # finish() can return before wandb's service has written the run file out (an
            # offline run file read right after held only its header); teardown waits.
            _teardown_wandb()
        return False


def _warn(message: str) -> None:
    """On stderr, where the user sees it whatever Hydra's job logging does; also logged."""
    print(f"slimexp: warning: {message}", file=sys.stderr, flush=True)
    log.debug(message)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def offline_records(run_file) -> list:
    """The protobuf records of an offline run file (`run-<id>.wandb`): LevelDB log blocks
    after a 7-byte W&B header. Offline runs write no readable summary; this reads it."""
    from pathlib import Path

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_file} is not a W&B run file")
    block, pos, pending, chunks = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # FULL
            chunks.append(chunk)
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            chunks.append(pending + chunk)
    return [pb.Record.FromString(chunk) for chunk in chunks]


def _updates(run_file, kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for record in offline_records(run_file):
        if record.WhichOneof("record_type") == kind:
            for item in getattr(record, kind).update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def offline_summary(run_file) -> dict[str, Any]:
    """The final summary of an offline run: every summary update applied in order."""
    return _updates(run_file, "summary")


def offline_config(run_file) -> dict[str, Any]:
    """The config of an offline run as the store holds it (nested dicts; W&B's own
    `_wandb` entry left out). wandb 0.31 writes the config given to `wandb.init` into the
    `run` record and later `run.config` changes as `config` records; both apply in order."""
    config: dict[str, Any] = {}
    for record in offline_records(run_file):
        kind = record.WhichOneof("record_type")
        updates = record.run.config if kind == "run" else record.config if kind == "config" else None
        if updates is None:
            continue
        for item in updates.update:
            _set_nested(config, _item_path(item), json.loads(item.value_json))
        for item in updates.remove:
            _set_nested(config, _item_path(item), None, remove=True)
    config.pop("_wandb", None)
    return config


def _item_path(item) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _set_nested(config: dict[str, Any], path: list[str], value: Any, remove: bool = False) -> None:
    *parents, last = path
    for name in parents:
        child = config.get(name)
        if not isinstance(child, dict):
            if remove:
                return
            child = config[name] = {}
        config = child
    if remove:
        config.pop(last, None)
    else:
        config[last] = value


def record_from_wandb(key: str, config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any] | None:
    """A store-shaped record from a W&B run's config and summary; None when the run did not
    get as far as its final summary (failed or still running)."""
    if RECORD_KEY not in summary:
        return None
    extra = summary[RECORD_KEY]
    extra = json.loads(extra) if isinstance(extra, str) else dict(extra)
    metrics = {
        k: v for k, v in summary.items() if k != RECORD_KEY and not k.startswith("_") and isinstance(v, (int, float))
    }
    return {**extra, "run_key": key, "status": "done", "config": config, "metrics": metrics, "source": "wandb"}


def wandb_records(
    keys: list[str], offline_dir: str | Path | None = None, project: str = "slimexp", entity: str | None = None
) -> list[dict[str, Any]]:
    """The records of these run keys as W&B holds them (W&B run id = run key): from the
    offline runs under `offline_dir` (its `wandb/` folder), or else from the W&B API."""
    records = []
    if offline_dir is not None:
        root = Path(offline_dir)
        root = root / "wandb" if (root / "wandb").is_dir() else root
        for key in keys:
            runs = sorted(root.glob(f"offline-run-*-{key}/run-{key}.wandb"))
            if runs:  # resumed runs write a new folder; the latest holds the final summary
                record = record_from_wandb(key, offline_config(runs[-1]), offline_summary(runs[-1]))
                if record:
                    records.append(record)
        return records
    import wandb

    api = wandb.Api()
    path = f"{entity or api.default_entity}/{project}"
    for key in keys:
        try:
            run = api.run(f"{path}/{key}")
        except (wandb.errors.CommError, ValueError):
            continue
        record = record_from_wandb(key, dict(run.config), dict(run.summary._json_dict))
        if record:
            records.append(record)
    return records
