"""Weights & Biases mirror of a run: one W&B run per job, `id = run_key`, resumable.

`logger.mode=disabled` (tests, default) never imports wandb. Offline runs are written
under `logger.dir` and can be synced later. The run is always finished, also when the job
fails (exit code 1), so no W&B run stays "running" forever. The API key comes from
`wandb login` / WANDB_API_KEY, never from a config or a record.
"""

from __future__ import annotations

from typing import Any


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
