"""Weights & Biases mirror of a run: one W&B run per job, `id = run_key`, resumable.

`logger.mode=disabled` (tests, default) never imports wandb. Offline runs are written
under `logger.dir` and can be synced later. The run is always finished, also when the job
fails (exit code 1), so no W&B run stays "running" forever. The API key comes from
`wandb login` / WANDB_API_KEY, never from a config or a record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Summary key holding the record's report fields (protocol, widths, analysis, ...) as JSON,
# so `slimexp-report --source wandb` can rebuild tables and plots from W&B alone.
RECORD_KEY = "slimexp/record"


class WandbLogger:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = dict(cfg)
        self.mode = self.cfg.get("mode", "disabled")
        if self.mode not in ("disabled", "offline", "online"):
            from slimexp.errors import SlimexpError

            raise SlimexpError(f"logger.mode must be disabled, offline or online, got '{self.mode}'")
        self.run = None

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, key: str, group: str, job_type: str, tags: list[str], config: dict[str, Any]) -> str | None:
        if not self.enabled:
            return None
        import wandb

        self.run = wandb.init(
            project=self.cfg.get("project", "slimexp"),
            entity=self.cfg.get("entity"),
            dir=self.cfg.get("dir"),
            mode=self.mode,
            id=key,
            resume="allow",
            group=group,
            job_type=job_type,
            tags=list(tags),
            config=config,
            reinit="finish_previous",
        )
        return self.run.id

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.run is not None:
            self.run.finish(exit_code=0 if exc_type is None else 1)
            self.run = None
        return False


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
    """The config of an offline run (W&B's own `_wandb` entry left out)."""
    return {k: v for k, v in _updates(run_file, "config").items() if k != "_wandb"}


def record_from_wandb(key: str, config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any] | None:
    """A store-shaped record from a W&B run's config and summary; None when the run did not
    get as far as its final summary (failed or still running)."""
    if RECORD_KEY not in summary:
        return None
    extra = summary[RECORD_KEY]
    extra = json.loads(extra) if isinstance(extra, str) else dict(extra)
    metrics = {k: v for k, v in summary.items() if k != RECORD_KEY and not k.startswith("_") and isinstance(v, (int, float))}
    return {**extra, "run_key": key, "status": "done", "config": config, "metrics": metrics, "source": "wandb"}


def wandb_records(keys: list[str], offline_dir: str | Path | None = None, project: str = "slimexp",
                  entity: str | None = None) -> list[dict[str, Any]]:
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
