"""Results store: `<dir>/runs/<run_key>.json`, one record per run, written atomically.

`run_key` hashes the resolved config minus the keys that do not change the science
(paths, logger, launcher, tags, experiment name, batch sizes, the scale block and which
paper model a substitute stands in for: their effects are already in the resolved values),
so the same run asked for by two experiments or two sweeps is one record. When that rule
changes, `python -m slimexp.tracking.store rekey` moves an existing store onto it. Records are written to a temporary file
in the same folder and renamed over the old one: a reader (or a concurrent writer on a
shared file system) sees either the old record or the new one, never half a file.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

# Dotted keys dropped before hashing: where things go and how fast, not what is computed.
NON_SCIENCE_KEYS = (
    "results",
    "logger",
    "runner",
    "tags",
    "experiment_name",
    "report",
    "hydra",
    "device",
    # The scale's caps and substitutions are applied to the resolved values before hashing;
    # the block itself would only split identical computations (a new cap, or Tables 2/8/9
    # on the same substitute model at scale=cpu) into separate records.
    "scale",
    "model.substitutes_for",
    "data.dir",
    "model.cache_dir",
    "calib.batch_size",
    "eval.ppl.batch_size",
    "eval.zeroshot.batch_size",
)
VERSIONED_PACKAGES = ("torch", "transformers", "lm-eval", "peft", "hydra-core", "wandb", "numpy", "pandas")
REPO_DIR = Path(__file__).resolve().parents[2]


# Features that are off contribute nothing to a result, so their settings (and the scale
# caps that only apply to them) stay out of the run key: adding such a feature to the
# schema must not invalidate every record made before it. (path, is-active); an inactive
# `finetune` hashes as null, the value the schema had before the group existed.
OPTIONAL_FEATURES = (
    ("eval.zeroshot", lambda block: bool(block.get("tasks"))),
    ("eval.latency", lambda block: bool(block.get("enabled"))),
    ("finetune", lambda block: block.get("name", "none") != "none"),
)
OFF_AS_NULL = ("finetune",)


def listed_experiments(record: dict[str, Any]) -> list[str]:
    """The experiments a record serves; records older than the list name one. An empty
    list means no experiment asks for the run any more."""
    return list(record["experiments"]) if "experiments" in record else [record.get("experiment")]


def _drop(config: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def science_config(config: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for path, active in OPTIONAL_FEATURES:
        block = _get(config, path)
        if block is None or not active(block):
            _drop(config, path)
            if path in OFF_AS_NULL:
                config[path] = None
    for dotted in NON_SCIENCE_KEYS:
        _drop(config, dotted)
    return config


def run_key(config: dict[str, Any]) -> str:
    canonical = json.dumps(science_config(config), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment_info() -> dict[str, Any]:
    """Git SHA + dirty flag and package versions: what produced a number."""
    versions = {"python": sys.version.split()[0]}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        versions["slimexp"] = metadata.version("slimexp")
    except metadata.PackageNotFoundError:
        versions["slimexp"] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git": {"sha": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}, "versions": versions}


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(payload, out, indent=1, default=str)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def path(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def read(self, key: str) -> dict[str, Any]:
        return json.loads(self.path(key).read_text())

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def is_done(self, key: str) -> bool:
        if not self.exists(key):
            return False
        try:
            return self.read(key).get("status") == "done"
        except (json.JSONDecodeError, OSError):
            return False

    def write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.path(record["run_key"]), record)

    @contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold the run's lock: a second job with the same key (two sweeps sharing a dense
        run, joblib workers, array tasks on a shared file system) waits here, then finds
        the record done and skips. The OS drops the lock when a process dies, so a killed
        job never blocks a later one. Where the file system has no flock, the lock is a
        no-op and atomic writes still keep every record whole."""
        self.runs.mkdir(parents=True, exist_ok=True)
        with open(self.runs / f".{key}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:
                pass
            try:
                yield
            finally:
                try:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except OSError:
                    pass

    def add_experiment(self, key: str, experiment: str) -> dict[str, Any]:
        """A done run asked for by another experiment: list it there too (no recompute)."""
        with self.claim(key):
            record = self.read(key)
            experiments = record.setdefault("experiments", listed_experiments(record))
            if experiment not in experiments:
                experiments.append(experiment)
                self.write(record)
        return record

    def remove_experiment(self, key: str, experiment: str) -> None:
        """Take a run off an experiment's list (the experiment no longer asks for it)."""
        with self.claim(key):
            record = self.read(key)
            experiments = listed_experiments(record)
            if experiment in experiments:
                record["experiments"] = [e for e in experiments if e != experiment]
                self.write(record)

    def rekey(self) -> list[tuple[str, str]]:
        """Move every record to the key the current `run_key` gives its stored config (and
        its saved model, if any, to match). Records that now share a key were the same
        computation: the done one is kept (the first, if both are) and lists the
        experiments of both. Returns the (old, new) pairs that moved."""
        moved = []
        for path in sorted(self.runs.glob("*.json")) if self.runs.is_dir() else []:
            record = json.loads(path.read_text())
            old, new = path.stem, run_key(record["config"])
            if old == new:
                continue
            record["run_key"] = new
            model_path = record.get("model_path")
            if model_path and Path(model_path).name == old and Path(model_path).exists():
                target = Path(model_path).with_name(new)
                if not target.exists():
                    Path(model_path).rename(target)
                record["model_path"] = str(target)
            if self.exists(new):
                kept = self.read(new)
                if kept.get("status") != "done" and record.get("status") == "done":
                    record, kept = kept, record
                    kept["run_key"] = new
                experiments = kept.setdefault("experiments", listed_experiments(kept))
                experiments += [e for e in listed_experiments(record) if e not in experiments]
                record = kept
            self.write(record)
            path.unlink()
            moved.append((old, new))
        return moved

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob("*.json")):
            try:
                yield json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                continue


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m slimexp.tracking.store",
                                     description="maintenance of a results store")
    sub = parser.add_subparsers(dest="command", required=True)
    rekey = sub.add_parser("rekey", help="move records onto the current run-key rule")
    rekey.add_argument("--results-dir", default=os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    args = parser.parse_args(argv)
    moved = ResultsStore(args.results_dir).rekey()
    for old, new in moved:
        print(f"{old} -> {new}")
    print(f"rekey: {len(moved)} record(s) moved in {args.results_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
