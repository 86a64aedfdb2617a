"""Text data sets, read from a local folder of JSONL files in the hub schemas or from the hub.

`data.dir` (default: the environment variable SLIMEXP_DATA_DIR) points at a folder laid
out as `<name>/<split>.jsonl`; without it the loaders use the Hugging Face hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from slimexp.errors import SlimexpError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    text_field: str
    default_split: str
    hub_path: str
    hub_name: str | None = None
    # Head slices of large hub sets: the local file is the first rows, not the whole split.
    hub_data_files: str | None = None


DATASETS: dict[str, DatasetSpec] = {
    "wikitext2": DatasetSpec("wikitext2", "text", "test", "wikitext", "wikitext-2-raw-v1"),
    "ptb": DatasetSpec("ptb", "sentence", "validation", "ptb_text_only", "penn_treebank"),
    "c4": DatasetSpec("c4", "text", "train", "allenai/c4", None, "en/c4-train.00000-of-01024.json.gz"),
    "bookcorpus": DatasetSpec("bookcorpus", "text", "train", "bookcorpus"),
    "alpaca_cleaned": DatasetSpec("alpaca_cleaned", "output", "train", "yahma/alpaca-cleaned"),
}


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise SlimexpError(f"unknown data set '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def check_data_dir(data_dir: str | None) -> None:
    if data_dir is not None and not Path(data_dir).is_dir():
        raise SlimexpError(
            f"data dir '{data_dir}' does not exist (set data.dir or SLIMEXP_DATA_DIR, or data.dir=null for the hub)"
        )


def local_path(name: str, split: str | None, data_dir: str | Path) -> Path:
    """`<data_dir>/<name>/<split>.jsonl`, which must exist."""
    split = split or spec(name).default_split
    path = Path(data_dir) / name / f"{split}.jsonl"
    if not path.is_file():
        raise SlimexpError(
            f"{name}/{split} not found in data dir {data_dir} (expected {path}; set data.dir, or data=hub)"
        )
    return path


def load_rows(name: str, split: str | None = None, data_dir: str | None = None) -> list[dict]:
    """All rows of one split, as dicts in the hub schema."""
    ds = spec(name)
    split = split or ds.default_split
    check_data_dir(data_dir)
    if data_dir is not None:
        return list(read_jsonl(local_path(name, split, data_dir)))
    return _load_hub(ds, split)


def check_data_file(path: str | Path) -> None:
    """Read (and cache) a local JSONL file: an error names the file, the line and the fix."""
    read_jsonl(path)


def read_jsonl(path: str | Path) -> tuple[dict, ...]:
    stat = Path(path).stat()
    return _read_jsonl(str(path), stat.st_size, stat.st_mtime)


@lru_cache(maxsize=16)
def _read_jsonl(path: str, size: int, mtime: float) -> tuple[dict, ...]:
    """One JSON object per line. Size and modification time are part of the cache key, so
    a file replaced while the process runs is read again."""
    fix = "the file is damaged: copy it again (or set data=hub)"
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    rows = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise SlimexpError(f"{path} line {number} is not UTF-8 text (byte {err.start}): {fix}") from None
        except json.JSONDecodeError as err:
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            what = "a truncated JSON record" if last else f"not valid JSON ({err.msg})"
            raise SlimexpError(f"{path} line {number} is {what}: {fix}") from None
        if not isinstance(row, dict):
            raise SlimexpError(f"{path} line {number} is not a JSON object: {fix}")
        rows.append(row)
    return tuple(rows)


def _load_hub(ds: DatasetSpec, split: str) -> list[dict]:
    try:
        import datasets

        kwargs = {"data_files": {split: ds.hub_data_files}} if ds.hub_data_files else {}
        loaded = datasets.load_dataset(ds.hub_path, ds.hub_name, split=split, **kwargs)
    except Exception as err:  # datasets raises many types when offline; all mean the same here
        raise SlimexpError(
            f"cannot load {ds.name}/{split} from the Hugging Face hub ({type(err).__name__}); "
            "set data.dir (or SLIMEXP_DATA_DIR) to a local data folder"
        ) from None
    return [dict(row) for row in loaded]


def load_texts(name: str, split: str | None = None, data_dir: str | None = None) -> list[str]:
    return [row[spec(name).text_field] for row in load_rows(name, split, data_dir)]


def data_source(data_dir: str | None) -> str:
    return "local" if data_dir is not None else "hub"
