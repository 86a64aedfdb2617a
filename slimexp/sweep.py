"""A sweep's failed runs, counted by the process that started the sweep, for every launcher.

Jobs run in that process (basic launcher), in joblib's worker processes, in submitit's
subprocesses or on SLURM nodes, so what a job remembers in its own memory never reaches
the parent. Each job therefore leaves a status marker in its Hydra output folder, tagged
with the sweep id the parent put in the environment (inherited by every launcher's
workers); after the sweep the parent's `SweepSummary` callback counts the markers of its
own sweep that say failed, or still running (a worker that died).

A job running in a descendant process of the parent also starts a watchdog that ends the
job once the parent is gone, so a killed sweep leaves no orphan computing. SLURM jobs run
elsewhere, under no such ancestor, and are not watched.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

SWEEP_ID = "SLIMEXP_SWEEP_ID"
SWEEP_PARENT = "SLIMEXP_SWEEP_PARENT"  # host:pid of the process that launched the sweep
MARKER = "slimexp_status.json"

# Set in the parent by SweepSummary at the end of a sweep: one line per run that failed.
failed_runs: list[str] = []
_watchdog: threading.Thread | None = None


def begin() -> None:
    """In the parent, before Hydra launches anything: name this sweep and its parent."""
    os.environ[SWEEP_ID] = uuid.uuid4().hex
    os.environ[SWEEP_PARENT] = f"{socket.gethostname()}:{os.getpid()}"
    failed_runs.clear()


def mark(status: str, message: str | None = None, run_key: str | None = None) -> None:
    """This job's status marker (running → done | failed), replaced atomically; nothing
    outside a sweep started by `begin()`."""
    sweep_id = os.environ.get(SWEEP_ID)
    if not sweep_id:
        return
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    marker = {
        "sweep": sweep_id,
        "status": status,
        "message": message,
        "run_key": run_key,
        "overrides": list(hydra_cfg.overrides.task),
        "pid": os.getpid(),
    }
    tmp = folder / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, folder / MARKER)


def sweep_failures(sweep_dir: str | Path, sweep_id: str) -> list[str]:
    """One line per run of this sweep under `sweep_dir` whose marker says failed or running."""
    failures = []
    for path in sorted(Path(sweep_dir).rglob(MARKER)):
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # ours are replaced atomically, so an unreadable one is not ours
        if marker.get("sweep") != sweep_id or marker.get("status") == "done":
            continue
        why = marker.get("message") if marker.get("status") == "failed" else "did not finish (its process died)"
        failures.append(f"{' '.join(marker.get('overrides') or []) or path.parent.name}: {why}")
    return failures


def print_failed_runs() -> int:
    """In the parent after the sweep: a line per failed run on stderr (submitit jobs write
    their own errors to log files only); how many failed."""
    for line in failed_runs:
        print(f"slimexp: failed: {line}", file=sys.stderr)
    return len(failed_runs)


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`); runs in the sweep's parent."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_id = os.environ.get(SWEEP_ID)
        if sweep_id:
            failed_runs[:] = sweep_failures(config.hydra.sweep.dir, sweep_id)


def _ancestors() -> list[int]:
    """Process ids above this one, nearest first (Linux /proc; else the parent only)."""
    pids, pid = [], os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return pids or [os.getppid()]
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        pids.append(pid)
    return pids


def watch_parent(interval: float = 0.5) -> None:
    """In a job whose process descends from the sweep's parent: a daemon thread that ends
    the process when that parent dies. Once per process (joblib workers run many jobs)."""
    global _watchdog
    host, _, pid = os.environ.get(SWEEP_PARENT, "").rpartition(":")
    if _watchdog is not None or host != socket.gethostname() or not pid.isdigit():
        return
    parent = int(pid)
    if parent == os.getpid() or parent not in _ancestors():
        return  # the basic launcher's own process, or a SLURM job: nothing to watch
    _watchdog = threading.Thread(target=_watch, args=(parent, interval), name="slimexp-watchdog", daemon=True)
    _watchdog.start()


def _watch(parent: int, interval: float) -> None:
    # A dead parent's children are re-parented, so it leaves our ancestry at once, also
    # while it is a zombie nobody has reaped yet.
    while parent in _ancestors():
        time.sleep(interval)
    print(f"slimexp: the sweep's process {parent} is gone: this job stops", file=sys.stderr, flush=True)
    os._exit(3)
