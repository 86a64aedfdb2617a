"""The MANIFEST.json of a local data folder, and whether each file is a full split or a head slice.

The format is one JSON object, `{"<name>/<split>.jsonl": {"rows": .., "bytes": .., "sha256": ..}}`.
`slimexp-data fetch` adds `slice` (full | head), `hub_id`, `hub_config`, `revision`,
`revision_requested`, `data_files` and `fetched_at` to the entries it writes. A folder made
before that (../shared/data) has no `slice`: its calibration and LoRA sets count as head
slices, and an evaluation set counts as full when it holds the full split's rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from slimexp.data.sources import EVALUATION, HUB_SOURCES
from slimexp.errors import SlimexpError

MANIFEST = "MANIFEST.json"
FULL, HEAD = "full", "head"


def read_manifest(data_dir: str | Path) -> dict[str, dict]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(entry, dict) for entry in data.values()):
        raise SlimexpError(f"{path} is not a JSON object of file entries: restore it, or delete it and fetch again")
    return data


def write_entry(data_dir: str | Path, key: str, entry: dict) -> None:
    """Replace one entry; the file is swapped whole (temp file + rename), so a reader never
    sees half a manifest. The caller holds the folder's fetch lock."""
    manifest = read_manifest(data_dir)
    manifest[key] = entry
    path = Path(data_dir) / MANIFEST
    temp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)


@dataclass(frozen=True)
class Slice:
    name: str
    split: str
    slice: str  # full | head
    rows: int
    full_rows: int | None
    recorded: bool  # the MANIFEST says so (written by fetch), not inferred

    def describe(self) -> str:
        held = f"{self.rows:,} of {self.full_rows:,} rows" if self.full_rows else f"{self.rows:,} rows"
        return f"{self.name}/{self.split} ({held})"


def count_rows(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def local_slice(data_dir: str | Path, name: str, split: str) -> Slice | None:
    """What `<data_dir>/<name>/<split>.jsonl` holds; None where the file is missing or the set
    and split are not in the hub table (nothing to compare with)."""
    path = Path(data_dir) / name / f"{split}.jsonl"
    hub = HUB_SOURCES.get(name)
    known = hub.splits.get(split) if hub else None
    if not path.is_file():
        return None
    entry = read_manifest(data_dir).get(f"{name}/{split}.jsonl") or {}
    # An entry describes the file only while the file is the size it recorded.
    current = entry.get("bytes") == path.stat().st_size
    full_rows = known.rows if known else None
    if current and entry.get("slice") in (FULL, HEAD):
        return Slice(name, split, entry["slice"], int(entry["rows"]), full_rows, recorded=True)
    if known is None:
        return None
    rows = int(entry["rows"]) if current and "rows" in entry else count_rows(path)
    full = known.role == EVALUATION and rows == known.rows
    return Slice(name, split, FULL if full else HEAD, rows, full_rows, recorded=False)


def head_slices_problem(
    data_dir: str | Path, needed: list[tuple[str, str]], calibration: tuple[str, str] | None = None, shortfall=None
) -> str | None:
    """The one-line refusal of a scale=paper run that would read a head slice, or None.

    The calibration set is a sample, not a split: a head slice serves it when the draw fits
    in it (the record then says it came from a head slice). `shortfall()` tries the draw and
    returns why it does not fit, or None.
    """
    heads, reason = [], ""
    for name, split in needed:
        found = local_slice(data_dir, name, split)
        if found is None or found.slice != HEAD:
            continue
        if (name, split) == calibration:
            short = shortfall()
            if short is None:
                continue
            reason = f" ({short})"
        heads.append(found)
    if not heads:
        return None
    names = " ".join(dict.fromkeys(name for name, _ in needed if name in HUB_SOURCES))
    listed = ", ".join(s.describe() for s in heads)
    verb, what = ("is a head slice", "split") if len(heads) == 1 else ("are head slices", "splits")
    return (
        f"{listed} in {data_dir} {verb}, and scale=paper reads the full {what}{reason}: "
        f"run 'slimexp-data fetch {names} --dir DIR' and set data.dir=DIR, or use data=hub"
    )
