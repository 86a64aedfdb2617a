"""Results store: `<dir>/runs/<run_key>.json`, one record per run, written atomically.

`run_key` hashes the resolved config minus the keys that do not change the science:
paths, logger, launcher, batch sizes, the scale block and which paper model a substitute
stands in for (their effects are already in the resolved values), and the labels
(`recipe`, `variant`, `experiment_name`, `tags`), which name a computation but do not change
it. So the same run asked for by two experiments, two sweeps or two table rows is one
record; the labels of the run that computed it are stored in it, and a report takes each
row's labels from its own experiment file. When that rule changes, `python -m
slimexp.tracking.store rekey` moves an existing store onto it, recomputing nothing.

Records are written to a temporary file in the same folder (named with host and pid, so a
killed writer's leftover is recognised and cleaned when the store next opens for writing),
fsynced and renamed over the old one, then the folder is fsynced: a reader (or a
concurrent writer on a shared file system) sees the old record or the new one, never half
a file. Files get the permissions of an ordinary write under the user's umask. Reading,
skipping done runs and reporting need no write access.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from slimexp.errors import SlimexpError
from slimexp.files import is_stale_temporary, writable, write_json_atomic
from slimexp.paths import REPO_DIR

# Dotted keys dropped before hashing: where things go and how fast, not what is computed.
NON_SCIENCE_KEYS = (
    "results",
    "logger",
    "runner",
    "plan",  # the resource planner: whether a run starts, not what it computes
    "model.geometry",  # a hub model's shape for the planner; the weights define it
    # Labels: stored in the record, never hashed.
    "recipe",
    "variant",
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
    "eval.zeroshot.scoring",  # lm-eval's scores either way, up to float rounding
)
VERSIONED_PACKAGES = ("torch", "transformers", "lm-eval", "peft", "hydra-core", "wandb", "numpy", "pandas")


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
# Protocol switches added after records existed, at the value that is the old protocol:
# hashed as absent, so those records keep their keys (any other value is a new run).
DEFAULT_AS_ABSENT = {"eval.ppl.bos": "stream", "method.regression": False}


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
    for dotted, default in DEFAULT_AS_ABSENT.items():
        if _get(config, dotted) == default:
            _drop(config, dotted)
    for dotted in NON_SCIENCE_KEYS:
        _drop(config, dotted)
    return config


def seed_independent(config: dict[str, Any], calibration: dict[str, Any] | None = None) -> bool:
    """Whether nothing the run computes draws from `seed`, so its one record serves every
    seed of a sweep and pairs with each seed in a claim. The seed feeds the calibration
    draw, LoRA's order, a random model's weights and the random method: a dense evaluation
    of a trained model uses none (known from the config: resolve_config sets its seed to 0);
    a run whose stream draw took every window of its source (`calibration`, the record's
    protocol) uses the same set at every seed, and is seed-independent when it has no
    fine-tuning either (known once its seed-0 run is done)."""
    method = (config.get("method") or {}).get("name")
    if (config.get("model") or {}).get("source") == "random" or method == "random":
        return False
    if method == "dense":
        return True
    calibration = calibration or {}
    whole_source = calibration.get("sampling") == "stream" and calibration.get("n_samples") == _source_windows(
        config, calibration
    )
    return whole_source and (config.get("finetune") or {}).get("name", "none") == "none"


# scale.calib_data_tokens counts the local slices in this tokenizer's tokens (conf/scale/cpu.yaml).
DATA_TOKENS_COUNTED_WITH = ("smollm2-135m",)


def _source_windows(config: dict[str, Any], calibration: dict[str, Any]) -> int | None:
    """How many windows the draw's source held: the record's protocol says so since it
    names `source_windows`; a record made before, of a run on the local data with the model
    whose tokenizer counted it, is read from the scale's declared token count."""
    if "source_windows" in calibration:
        return calibration["source_windows"]
    if (config.get("model") or {}).get("name") not in DATA_TOKENS_COUNTED_WITH:
        return None
    return declared_source_windows(config, calibration)


def declared_source_windows(config: dict[str, Any], calib: dict[str, Any]) -> int | None:
    """The stream windows of `calib.seqlen` tokens a local slice holds by the scale's
    declared token count (`scale.calib_data_tokens`); None where it declares none, or the
    run reads the hub's data."""
    held = ((config.get("scale") or {}).get("calib_data_tokens") or {}).get(calib.get("dataset"))
    local = (config.get("data") or {}).get("dir") is not None
    if not (held and local and calib.get("seqlen")):
        return None
    return held // calib["seqlen"]


def record_seed_independent(record: dict[str, Any]) -> bool:
    return seed_independent(record.get("config") or {}, (record.get("protocol") or {}).get("calibration"))


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
    return {
        "git": {"sha": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None},
        "versions": versions,
    }


LABEL_KEYS = ("recipe", "variant", "experiment_name", "tags")


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.unreadable: dict[Path, str] = {}

    def path(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def read(self, key: str) -> dict[str, Any]:
        return json.loads(self.path(key).read_text())

    def get(self, key: str) -> dict[str, Any] | None:
        """The record, or None when there is none or it cannot be read (noted in
        `unreadable` for `warn_unreadable`)."""
        return self._load(self.path(key))

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            self.unreadable[path] = type(err).__name__
            return None
        if not isinstance(record, dict):
            self.unreadable[path] = "not a JSON object"
            return None
        return record

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def is_done(self, key: str) -> bool:
        record = self.get(key)
        return record is not None and record.get("status") == "done"

    def warn_unreadable(self) -> int:
        """One stderr line naming every record that could not be read; returns the count."""
        if self.unreadable:
            names = ", ".join(f"{p} ({why})" for p, why in sorted(self.unreadable.items()))
            print(f"slimexp: warning: {len(self.unreadable)} unreadable record(s) skipped: {names}", file=sys.stderr)
        return len(self.unreadable)

    def check_writable(self) -> None:
        if not writable(self.runs):
            raise SlimexpError(
                f"results folder '{self.root}' is not writable: set results.dir (or SLIMEXP_RESULTS_DIR) to a "
                "writable folder; reading, skipping done runs and reporting work read-only"
            )

    def clean_stale_temporaries(self) -> list[Path]:
        """Remove what killed writers left (`.*.tmp`); live writers' files are kept."""
        removed = []
        for path in self.runs.glob(".*.tmp") if self.runs.is_dir() else []:
            if is_stale_temporary(path):
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass
        return removed

    def write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.path(record["run_key"]), record)

    @contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold the run's lock: a second job with the same key (two sweeps sharing a dense
        run, joblib workers, array tasks on a shared file system) waits here, then finds
        the record done and skips. The OS drops the lock when a process dies, so a killed
        job never blocks a later one (filelock: flock where the file system has it, else
        its soft lock)."""
        self.check_writable()
        self.runs.mkdir(parents=True, exist_ok=True)
        self.clean_stale_temporaries()
        with FileLock(self.runs / f".{key}.lock"):
            yield

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record; unreadable ones are skipped with one warning at the end."""
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob("*.json")):
            record = self._load(path)
            if record is not None:
                yield record
        self.warn_unreadable()

    def rekey(self) -> list[tuple[str, str]]:
        """Move every record to the key the current `run_key` gives its stored config (and
        its saved model, if any, to match); nothing is recomputed. Records that now share a
        key were the same computation: the done one stays (the first, if both are), the
        other moves to `runs/superseded/` (kept, never deleted). Unreadable records are
        skipped with a warning. Returns the (old, new) pairs that moved."""
        moved = []
        for path in sorted(self.runs.glob("*.json")) if self.runs.is_dir() else []:
            record = self._load(path)
            if record is None or not isinstance(record.get("config"), dict):
                self.unreadable.setdefault(path, "no config")
                continue
            old, new = path.stem, run_key(record["config"])
            if old == new:
                continue
            record["run_key"] = new
            self._move_model(record, old, new)
            kept = self.get(new)
            if kept is not None and (kept.get("status") == "done" or record.get("status") != "done"):
                self._supersede(record, old)
            else:
                if kept is not None:  # a running or failed record under the new key: the done one wins
                    self._supersede(kept, f"{new}-before-{old}")
                self.write(record)
            path.unlink()
            moved.append((old, new))
        self.warn_unreadable()
        return moved

    def _supersede(self, record: dict[str, Any], name: str) -> None:
        target = self.runs / "superseded" / f"{name}.json"
        write_json_atomic(target, {**record, "superseded_by": record["run_key"]})
        print(
            f"slimexp: rekey: {name} is the same computation as {record['run_key']}; kept as {target}", file=sys.stderr
        )

    @staticmethod
    def _move_model(record: dict[str, Any], old: str, new: str) -> None:
        model_path = record.get("model_path")
        if model_path and Path(model_path).name == old and Path(model_path).exists():
            target = Path(model_path).with_name(new)
            if not target.exists():
                Path(model_path).rename(target)
                record["model_path"] = str(target)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m slimexp.tracking.store", description="maintenance of a results store"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rekey = sub.add_parser("rekey", help="move records onto the current run-key rule (nothing is recomputed)")
    rekey.add_argument("--results-dir", default=os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    args = parser.parse_args(argv)
    store = ResultsStore(args.results_dir)
    try:
        store.check_writable()
    except SlimexpError as err:
        print(f"slimexp: error: {err}", file=sys.stderr)
        return 2
    moved = store.rekey()
    for old, new in moved:
        print(f"{old} -> {new}")
    print(f"rekey: {len(moved)} record(s) moved in {args.results_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
