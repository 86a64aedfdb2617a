"""`slimexp-data`: the full splits the papers use, fetched from the hub into a local data folder.

    slimexp-data fetch [NAME[/SPLIT] ...] --dir DIR   # default: every set in the hub table
    slimexp-data status [--dir DIR]                   # each split: role, hub id, local rows, slice

A split is streamed into `<name>/<split>.jsonl.partial` and renamed to `<split>.jsonl` only
when whole, then its MANIFEST entry is written (`slice: full`, rows, bytes, sha256, the hub
id, config and the commit the revision resolved to). A fetch that stops (killed, network
gone) resumes from the last whole row of the partial file; a split whose entry matches the
table and whose file has the recorded size is not fetched again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from slimexp.data.manifest import FULL, MANIFEST, local_slice, read_manifest, write_entry
from slimexp.data.sources import HUB_SOURCES, hub_kwargs, hub_source
from slimexp.errors import SlimexpError

# `datasets.load_dataset` builders that read local files: they have no hub revision.
LOCAL_BUILDERS = ("json", "parquet", "csv", "text", "arrow")
CHUNK = 1 << 24


def targets(names: list[str]) -> list[tuple[str, str]]:
    """(set, split) for `NAME` (the splits the papers use) or `NAME/SPLIT`; every set when none is named."""
    pairs = []
    for item in names or list(HUB_SOURCES):
        name, _, split = item.partition("/")
        source = hub_source(name)
        if split and split not in source.splits and split not in (source.data_files or {}):
            known = ", ".join(source.splits)
            raise SlimexpError(f"{name} has no split '{split}' in the hub table; its splits: {known}")
        pairs += [(name, split)] if split else [(name, s) for s in source.splits]
    return list(dict.fromkeys(pairs))


def is_current(entry: dict | None, name: str, path: Path) -> bool:
    source = hub_source(name)
    return (
        bool(entry)
        and entry.get("slice") == FULL
        and entry.get("hub_id") == source.hub_id
        and entry.get("hub_config") == source.config
        and entry.get("revision_requested") == source.revision
        and entry.get("data_files") == source.data_files
        and path.is_file()
        and path.stat().st_size == entry.get("bytes")
    )


def resolve_revision(name: str) -> str:
    """The commit the table's revision points at now, so the MANIFEST names what was read
    and a resumed fetch continues the same data."""
    source = hub_source(name)
    if source.hub_id in LOCAL_BUILDERS or Path(source.hub_id).exists():
        return source.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.hub_id, revision=source.revision).sha
    except Exception as err:  # offline, gated, unknown repo or ref: each is the same fix
        raise SlimexpError(
            f"cannot resolve {source.hub_id}@{source.revision} on the Hugging Face hub ({type(err).__name__}): "
            "check the network and HF_TOKEN, or the hub id in slimexp/data/sources.py HUB_SOURCES"
        ) from None


def resume_point(partial: Path, origin: dict) -> tuple[int, int, Any]:
    """(rows, bytes, sha256 so far) of a partial file from an earlier fetch of the same
    origin, cut back to its last whole row; a partial of another origin is discarded."""
    sidecar = partial.with_name(partial.name + ".json")
    digest = hashlib.sha256()
    try:
        previous = json.loads(sidecar.read_text())
    except (OSError, ValueError):  # none yet, or cut short by a kill: start the split again
        previous = None
    if not partial.is_file() or previous != origin:
        partial.write_bytes(b"")
        sidecar.write_text(json.dumps(origin, sort_keys=True))
        return 0, 0, digest
    with open(partial, "r+b") as handle:
        whole = _end_of_last_row(handle, partial.stat().st_size)
        handle.truncate(whole)  # a row cut by the kill is dropped and fetched again
        handle.seek(0)
        rows = 0
        while chunk := handle.read(CHUNK):  # chunks: a partial BookCorpus is gigabytes
            digest.update(chunk)
            rows += chunk.count(b"\n")
    return rows, whole, digest


def _end_of_last_row(handle, size: int) -> int:
    """The offset just after the file's last newline (0 where it has none)."""
    end = size
    while end > 0:
        start = max(0, end - CHUNK)
        handle.seek(start)
        at = handle.read(end - start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def _json_default(value):
    # datasets reads C4's ISO timestamps as datetimes; str() gives the form the local
    # folder holds ("2019-04-25 12:57:54").
    if isinstance(value, (datetime, date)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def stream_rows(name: str, split: str, revision: str, skip: int):
    try:
        import datasets

        stream = datasets.load_dataset(**hub_kwargs(name, split, revision), streaming=True)
    except Exception as err:  # datasets raises many types for one cause: the hub copy cannot be read
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise SlimexpError(
            f"cannot load {name}/{split} from {hub_source(name).hub_id} ({type(err).__name__}: {detail}): "
            "check the network and the hub id in slimexp/data/sources.py HUB_SOURCES"
        ) from None
    return stream.skip(skip) if skip else stream


def write_split(name: str, split: str, folder: Path, revision: str) -> tuple[int, int, str]:
    """Stream one split into `<split>.jsonl.partial` (appending after the rows a stopped
    fetch left) and rename it when whole. Returns (rows, bytes, sha256)."""
    from tqdm import tqdm

    partial = folder / f"{split}.jsonl.partial"
    source = hub_source(name)
    origin = {**hub_kwargs(name, split, revision), "hub_revision": source.revision}
    rows, size, digest = resume_point(partial, origin)
    expected = source.splits.get(split)
    bar = tqdm(total=expected.rows if expected else None, initial=rows, unit="rows", desc=f"{name}/{split}")
    try:
        with open(partial, "ab") as out:
            for row in stream_rows(name, split, revision, rows):
                line = (json.dumps(dict(row), ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")
                out.write(line)
                digest.update(line)
                rows, size = rows + 1, size + len(line)
                bar.update()
            out.flush()
            os.fsync(out.fileno())
    except SlimexpError:
        raise
    except Exception as err:  # a dropped connection mid-stream: what was written stays for the resume
        raise SlimexpError(
            f"fetching {name}/{split} stopped after {rows:,} rows ({type(err).__name__}): "
            "run the same command again to resume"
        ) from None
    finally:
        bar.close()
    if expected and expected.rows is not None and rows != expected.rows:
        raise SlimexpError(
            f"{name}/{split} from {source.hub_id}@{revision} has {rows:,} rows, the table expects "
            f"{expected.rows:,}: check the hub id, revision and data_files in slimexp/data/sources.py HUB_SOURCES"
        )
    os.replace(partial, folder / f"{split}.jsonl")
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)
    return rows, size, digest.hexdigest()


def fetch_split(name: str, split: str, data_dir: Path) -> str:
    """Fetch one split unless the folder holds it already; returns the line to print."""
    key = f"{name}/{split}.jsonl"
    path = data_dir / key
    if is_current(read_manifest(data_dir).get(key), name, path):
        return f"{name}/{split}: up to date ({read_manifest(data_dir)[key]['rows']:,} rows)"
    source = hub_source(name)
    revision = resolve_revision(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, size, sha = write_split(name, split, path.parent, revision)
    entry = {
        "rows": rows,
        "bytes": size,
        "sha256": sha,
        "slice": FULL,
        "hub_id": source.hub_id,
        "hub_config": source.config,
        "revision": revision,
        "revision_requested": source.revision,
        "data_files": source.data_files,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_entry(data_dir, key, entry)
    return f"{name}/{split}: {rows:,} rows from {source.hub_id}@{revision}"


def fetch(names: list[str], data_dir: str | Path) -> list[str]:
    """Fetch the named sets (all when none) into `data_dir`; one fetch per folder at a time."""
    from filelock import FileLock, Timeout

    pairs = targets(names)
    folder = Path(data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / ".slimexp-data.lock"))
        lock.acquire(timeout=0)
    except Timeout:
        raise SlimexpError(f"another slimexp-data fetch is writing to {folder}: wait for it to finish") from None
    except OSError as err:
        raise SlimexpError(f"cannot write to {folder} ({err.strerror}): choose a writable --dir") from None
    try:
        lines = []
        for name, split in pairs:
            lines.append(fetch_split(name, split, folder))
            print(lines[-1], flush=True)
        return lines
    except PermissionError as err:
        raise SlimexpError(f"cannot write {err.filename} ({err.strerror}): choose a writable --dir") from None
    finally:
        lock.release()


def status_lines(data_dir: str | Path | None) -> list[str]:
    lines = [f"{'split':<26}{'role':<13}{'hub id@revision (config)':<58}{'full rows':>12}  local"]
    for name, source in HUB_SOURCES.items():
        origin = f"{source.hub_id}@{source.revision}" + (f" ({source.config})" if source.config else "")
        for split, info in source.splits.items():
            found = local_slice(data_dir, name, split) if data_dir is not None else None
            held = f"{found.rows:,} rows, {found.slice}" if found else "missing" if data_dir is not None else "-"
            if found and not found.recorded:
                held += f" (no slice in {MANIFEST}: inferred)"
            full = f"{info.rows:,}" if info.rows else "?"
            lines.append(f"{name + '/' + split:<26}{info.role:<13}{origin:<58}{full:>12}  {held}")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimexp-data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="fetch full splits from the hub into a local data folder")
    fetch_cmd.add_argument("names", nargs="*", metavar="NAME[/SPLIT]", help="data sets (default: all)")
    fetch_cmd.add_argument("--dir", required=True, help="the local data folder to write (data.dir)")
    status_cmd = commands.add_parser("status", help="the hub table and what a local folder holds")
    status_cmd.add_argument("--dir", default=os.environ.get("SLIMEXP_DATA_DIR"), help="default: $SLIMEXP_DATA_DIR")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            fetch(args.names, args.dir)
        else:
            print("\n".join(status_lines(args.dir)))
    except SlimexpError as err:
        print(f"slimexp-data: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
