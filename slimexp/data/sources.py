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


DATASETS: dict[str, DatasetSpec] = {
    "wikitext2": DatasetSpec("wikitext2", "text", "test"),
    "ptb": DatasetSpec("ptb", "sentence", "validation"),
    "c4": DatasetSpec("c4", "text", "train"),
    "bookcorpus": DatasetSpec("bookcorpus", "text", "train"),
    "alpaca_cleaned": DatasetSpec("alpaca_cleaned", "output", "train"),
}

EVALUATION, CALIBRATION, FINETUNE = "evaluation", "calibration", "finetune"
# The hub's automatic parquet conversion of a repo whose main branch holds a loading script
# (datasets >= 4 runs no scripts); its layout is <config>/<split>/NNNN.parquet.
PARQUET_EXPORT = "refs/convert/parquet"


@dataclass(frozen=True)
class HubSplit:
    rows: int | None  # rows of the full split on the hub, where known
    role: str  # evaluation | calibration | finetune


@dataclass(frozen=True)
class HubSource:
    hub_id: str
    config: str | None
    revision: str
    splits: dict[str, HubSplit]  # the splits the papers use: what `slimexp-data fetch NAME` writes
    # split -> file pattern in the repo, where the config does not select the files itself
    data_files: dict[str, str] | None = None


def _parquet_export(config: str, splits: tuple[str, ...]) -> dict[str, str]:
    return {split: f"{config}/{split}/*.parquet" for split in splits}


# Every local set (`<name>/<split>.jsonl`) and where its full split is on the hub: the text
# sets above and the zero-shot sets (lm-eval 0.4.13's own task ids). Chosen for loading
# with datasets >= 4 (no scripts) and not checked against the hub from this project's
# offline machines; `slimexp-data fetch` records the commit each one resolved to.
HUB_SOURCES: dict[str, HubSource] = {
    "wikitext2": HubSource(
        "Salesforce/wikitext",
        "wikitext-2-raw-v1",
        "main",
        {"test": HubSplit(4_358, EVALUATION), "train": HubSplit(36_718, CALIBRATION)},
    ),
    "ptb": HubSource(
        "ptb-text-only/ptb_text_only",
        None,
        PARQUET_EXPORT,
        {"validation": HubSplit(3_370, EVALUATION), "test": HubSplit(3_761, EVALUATION)},
        _parquet_export("penn_treebank", ("train", "validation", "test")),
    ),
    "c4": HubSource(
        "allenai/c4",
        None,
        "main",
        {"train": HubSplit(356_317, CALIBRATION)},
        # the one shard SparseGPT, Wanda and FLAP calibrate from
        {"train": "en/c4-train.00000-of-01024.json.gz"},
    ),
    "bookcorpus": HubSource(
        "bookcorpus/bookcorpus",
        None,
        PARQUET_EXPORT,
        {"train": HubSplit(74_004_228, CALIBRATION)},
        _parquet_export("plain_text", ("train",)),
    ),
    "alpaca_cleaned": HubSource("yahma/alpaca-cleaned", None, "main", {"train": HubSplit(51_760, FINETUNE)}),
    "boolq": HubSource("aps/super_glue", "boolq", "main", {"validation": HubSplit(3_270, EVALUATION)}),
    "piqa": HubSource("baber/piqa", None, "main", {"validation": HubSplit(1_838, EVALUATION)}),
    "hellaswag": HubSource("Rowan/hellaswag", None, "main", {"validation": HubSplit(10_042, EVALUATION)}),
    "winogrande": HubSource("allenai/winogrande", "winogrande_xl", "main", {"validation": HubSplit(1_267, EVALUATION)}),
    "arc_easy": HubSource("allenai/ai2_arc", "ARC-Easy", "main", {"test": HubSplit(2_376, EVALUATION)}),
    "arc_challenge": HubSource("allenai/ai2_arc", "ARC-Challenge", "main", {"test": HubSplit(1_172, EVALUATION)}),
    "openbookqa": HubSource("allenai/openbookqa", "main", "main", {"test": HubSplit(500, EVALUATION)}),
}


def hub_source(name: str) -> HubSource:
    if name not in HUB_SOURCES:
        raise SlimexpError(f"unknown data set '{name}'; known: {', '.join(HUB_SOURCES)}")
    return HUB_SOURCES[name]


def hub_kwargs(name: str, split: str, revision: str | None = None) -> dict:
    """`datasets.load_dataset` arguments for one split of the table (at `revision`, default the table's)."""
    source = hub_source(name)
    kwargs = {"path": source.hub_id, "name": source.config, "revision": revision or source.revision, "split": split}
    if source.data_files is not None:
        if split not in source.data_files:
            known = ", ".join(source.data_files)
            raise SlimexpError(f"{name} has no split '{split}' on the hub ({source.hub_id}); its splits: {known}")
        kwargs["data_files"] = {split: source.data_files[split]}
    return kwargs


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
    kwargs = hub_kwargs(ds.name, split)
    try:
        import datasets

        loaded = datasets.load_dataset(**kwargs)
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
