"""Data for paper scale: `slimexp-data fetch` against a stand-in hub, the slices of a local
folder, and the scale=paper guard that stops a run on a head slice before any model loads.

The stand-in hub is local files (the shared slices written as JSON.gz or parquet) that the
hub table is pointed at: `datasets.load_dataset` streams them exactly as it streams a hub
repo's files, offline.
"""

import dataclasses
import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, config_for, run_module
from slimexp.data import fetch as fetch_module
from slimexp.data import manifest as manifest_module
from slimexp.data import sources
from slimexp.data.fetch import fetch, main
from slimexp.data.manifest import head_slices_problem, local_slice, read_manifest
from slimexp.data.sources import CALIBRATION, EVALUATION, HUB_SOURCES, HubSource, HubSplit
from slimexp.errors import SlimexpError

SHARED_HEADS = {"c4/train", "bookcorpus/train", "alpaca_cleaned/train", "hellaswag/validation"}
# The data set each paper recipe calibrates on (None: it uses no data).
RECIPE_CALIBRATION = {
    "flap": "c4",
    "llm_pruner": "bookcorpus",
    "lorap": "bookcorpus",
    "loraprune": "c4",
    "magnitude": None,
    "random": None,
    "slimgpt": "c4",
    "slimllm": "bookcorpus",
    "wanda_sp": "c4",
}
PAPER_RECIPES = sorted(p.parent.name for p in (REPO / "conf" / "recipe").glob("*/paper.yaml"))


def _shared_rows(key):
    return [json.loads(line) for line in (SHARED_DATA / key).read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Point the table's c4 at a JSON.gz of the shared head (as allenai/c4 ships its shards)
    and arc_easy at a parquet file (as the hub's parquet repos): 1000 and 2376 rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    hub = tmp_path / "hub"
    hub.mkdir()
    with gzip.open(hub / "c4-train.00000-of-01024.json.gz", "wb") as out:
        out.write((SHARED_DATA / "c4" / "train.jsonl").read_bytes())
    pq.write_table(pa.Table.from_pylist(_shared_rows("arc_easy/test.jsonl")), hub / "arc_easy-test.parquet")
    c4 = HubSource("json", None, "main", {"train": HubSplit(1000, CALIBRATION)}, {"train": str(hub / "c4-*.json.gz")})
    arc = HubSource("parquet", None, "main", {"test": HubSplit(2376, EVALUATION)}, {"test": str(hub / "arc_*.parquet")})
    monkeypatch.setitem(HUB_SOURCES, "c4", c4)
    monkeypatch.setitem(HUB_SOURCES, "arc_easy", arc)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return hub


def _stop_after(monkeypatch, rows):
    """`datasets.load_dataset` whose stream raises after `rows` rows: a fetch killed mid-write."""
    import datasets

    real = datasets.load_dataset

    def stopping(*args, **kwargs):
        stream = real(*args, **kwargs)

        class Stopping:
            def __iter__(self):
                for index, row in enumerate(stream):
                    if index == rows:
                        raise ConnectionError("the connection dropped")
                    yield row

        return Stopping()

    monkeypatch.setattr(datasets, "load_dataset", stopping)
    return real


def test_fetch_writes_the_hub_schema_and_a_full_manifest_entry(stand_in, tmp_path):
    folder = tmp_path / "data"
    lines = fetch(["c4", "arc_easy"], folder)
    assert lines == [
        "c4/train: 1,000 rows from json@main",
        "arc_easy/test: 2,376 rows from parquet@main",
    ]
    # Byte for byte the shared files: the hub schema (C4's timestamps included), one row a line.
    for key in ("c4/train.jsonl", "arc_easy/test.jsonl"):
        assert (folder / key).read_bytes() == (SHARED_DATA / key).read_bytes(), key
    shared = read_manifest(SHARED_DATA)
    manifest = read_manifest(folder)
    assert sorted(manifest) == ["arc_easy/test.jsonl", "c4/train.jsonl"]
    entry = manifest["c4/train.jsonl"]
    assert {k: entry[k] for k in ("rows", "bytes", "sha256")} == shared["c4/train.jsonl"]
    assert entry["sha256"] == hashlib.sha256((folder / "c4/train.jsonl").read_bytes()).hexdigest()
    assert entry["slice"] == "full" and entry["hub_id"] == "json" and entry["hub_config"] is None
    assert entry["revision"] == entry["revision_requested"] == "main"
    assert entry["data_files"] == {"train": str(stand_in / "c4-*.json.gz")} and entry["fetched_at"]
    assert sorted(p.name for p in (folder / "c4").iterdir()) == ["train.jsonl"]  # no partial left
    assert local_slice(folder, "c4", "train").slice == "full" and local_slice(folder, "c4", "train").recorded


def test_a_second_fetch_is_a_no_op(stand_in, tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "data"
    fetch(["c4"], folder)
    before = (folder / "MANIFEST.json").read_bytes(), (folder / "c4" / "train.jsonl").stat().st_mtime_ns
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("a fetched split was read again"))
    assert fetch(["c4"], folder) == ["c4/train: up to date (1,000 rows)"]
    assert ((folder / "MANIFEST.json").read_bytes(), (folder / "c4" / "train.jsonl").stat().st_mtime_ns) == before


def test_a_killed_fetch_resumes_and_ends_identical_to_an_uninterrupted_one(stand_in, tmp_path, monkeypatch):
    import datasets

    whole = tmp_path / "whole"
    fetch(["c4"], whole)
    folder = tmp_path / "data"
    real = _stop_after(monkeypatch, 300)
    with pytest.raises(SlimexpError, match=r"fetching c4/train stopped after 300 rows .*run the same command again"):
        fetch(["c4"], folder)
    partial = folder / "c4" / "train.jsonl.partial"
    assert partial.read_bytes().count(b"\n") == 300
    # The kill also cut the row being written: 300 rows and a half.
    with open(partial, "ab") as out:
        out.write(b'{"text": "half a ro')
    # Never taken for the split: no train.jsonl, no MANIFEST entry, the guard finds no file.
    assert not (folder / "c4" / "train.jsonl").exists() and "c4/train.jsonl" not in read_manifest(folder)
    assert local_slice(folder, "c4", "train") is None
    skipped = []

    def resuming(*args, **kwargs):
        stream = real(*args, **kwargs)
        original_skip = stream.skip
        stream.skip = lambda n: skipped.append(n) or original_skip(n)
        return stream

    monkeypatch.setattr(datasets, "load_dataset", resuming)
    assert fetch(["c4"], folder) == ["c4/train: 1,000 rows from json@main"]
    assert skipped == [300]  # resumed after the 300 whole rows, not from the start
    assert (folder / "c4" / "train.jsonl").read_bytes() == (whole / "c4" / "train.jsonl").read_bytes()
    assert read_manifest(folder)["c4/train.jsonl"]["sha256"] == read_manifest(whole)["c4/train.jsonl"]["sha256"]
    assert sorted(p.name for p in (folder / "c4").iterdir()) == ["train.jsonl"]


def test_a_fetch_killed_over_an_old_head_slice_leaves_the_head_slice_marked_head(stand_in, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "c4").mkdir(parents=True)
    shutil.copy(SHARED_DATA / "c4" / "train.jsonl", folder / "c4" / "train.jsonl")
    shutil.copy(SHARED_DATA / "MANIFEST.json", folder / "MANIFEST.json")
    _stop_after(monkeypatch, 10)
    with pytest.raises(SlimexpError):
        fetch(["c4"], folder)
    assert local_slice(folder, "c4", "train").slice == "head"


def test_a_fetch_killed_between_the_rename_and_the_manifest_is_not_taken_as_full(stand_in, tmp_path, monkeypatch):
    folder = tmp_path / "data"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module, "write_entry", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch(["c4"], folder)
    assert (folder / "c4" / "train.jsonl").is_file() and "c4/train.jsonl" not in read_manifest(folder)
    assert local_slice(folder, "c4", "train").slice == "head"  # a calibration set without a full entry
    monkeypatch.setattr(fetch_module, "write_entry", manifest_module.write_entry)
    assert fetch(["c4"], folder) == ["c4/train: 1,000 rows from json@main"]  # fetched again, not "up to date"
    assert local_slice(folder, "c4", "train").slice == "full"


def test_a_row_count_that_differs_from_the_table_is_refused(stand_in, tmp_path, monkeypatch):
    bigger = dataclasses.replace(HUB_SOURCES["c4"], splits={"train": HubSplit(356_317, CALIBRATION)})
    monkeypatch.setitem(HUB_SOURCES, "c4", bigger)
    with pytest.raises(SlimexpError, match=r"has 1,000 rows, the table expects 356,317: check the hub id"):
        fetch(["c4"], tmp_path / "data")
    assert not (tmp_path / "data" / "c4" / "train.jsonl").exists()


def test_the_cli_refuses_bad_names_and_an_unreachable_hub_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for argv, fragment in [
        (["fetch", "nope", "--dir", str(tmp_path)], "unknown data set 'nope'; known: wikitext2, ptb, c4"),
        (["fetch", "c4/validation", "--dir", str(tmp_path)], "c4 has no split 'validation' in the hub table"),
        (["fetch", "c4", "--dir", str(tmp_path)], "cannot resolve allenai/c4@main on the Hugging Face hub"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("slimexp-data: error: ") and fragment in lines[0], lines


def test_the_shared_folder_is_marked_head_for_its_slices_and_full_for_whole_evaluation_splits():
    manifest = read_manifest(SHARED_DATA)
    seen = {}
    for key in manifest:
        name, split = key.removesuffix(".jsonl").split("/")
        found = local_slice(SHARED_DATA, name, split)
        seen[f"{name}/{split}"] = found.slice
        assert not found.recorded and found.rows == manifest[key]["rows"]
    assert {key for key, kind in seen.items() if kind == "head"} == SHARED_HEADS
    assert len(seen) == 13


def test_a_recorded_slice_counts_only_while_the_file_is_the_size_it_recorded(tmp_path):
    folder = tmp_path / "data"
    (folder / "c4").mkdir(parents=True)
    shutil.copy(SHARED_DATA / "c4" / "train.jsonl", folder / "c4" / "train.jsonl")
    entry = {**read_manifest(SHARED_DATA)["c4/train.jsonl"], "slice": "full"}
    (folder / "MANIFEST.json").write_text(json.dumps({"c4/train.jsonl": entry}))
    assert local_slice(folder, "c4", "train").slice == "full"
    with open(folder / "c4" / "train.jsonl", "ab") as out:
        out.write(b'{"text": "one more", "timestamp": "2019-04-25 12:57:54", "url": "u"}\n')
    assert local_slice(folder, "c4", "train").slice == "head"
    (folder / "MANIFEST.json").write_text("[1, 2]")
    with pytest.raises(SlimexpError, match="MANIFEST.json is not a JSON object of file entries"):
        local_slice(folder, "c4", "train")


def test_the_head_slice_message_names_the_sets_and_both_fixes():
    problem = head_slices_problem(SHARED_DATA, [("wikitext2", "test"), ("ptb", "validation"), ("c4", "train")])
    assert problem == (
        f"c4/train (1,000 of 356,317 rows) in {SHARED_DATA} is a head slice, and scale=paper reads the full split: "
        "run 'slimexp-data fetch wikitext2 ptb c4 --dir DIR' and set data.dir=DIR, or use data=hub"
    )
    assert head_slices_problem(SHARED_DATA, [("wikitext2", "test"), ("ptb", "validation")]) is None


# What each paper recipe's calibration draw asks of the shared head slices at scale=paper:
# SlimGPT 256 documents over 2048 tokens and FLAP 1024 over 128 do not fit in the 1,000-row
# C4 head; Wanda-sp's 128 × 128 does, and so do the BookCorpus streams of SlimLLM (32 × 128)
# and LLM-Pruner (10 × 64): those runs calibrate on the head, and say so in the record.
CALIBRATION_FITS_THE_HEAD = {"flap": False, "slimgpt": False, "wanda_sp": True, "slimllm": True, "llm_pruner": True}
CALIBRATION_FITS_THE_HEAD["loraprune"] = False  # 20000 C4 documents
CALIBRATION_FITS_THE_HEAD["lorap"] = False  # 128 BookCorpus windows of 128: the local slice holds 63


def _paper_cases():
    cases = []
    for recipe in PAPER_RECIPES:
        calib = RECIPE_CALIBRATION[recipe]
        short = [calib] if calib and not CALIBRATION_FITS_THE_HEAD[recipe] else []
        cases.append(([f"recipe={recipe}/paper", "eval=full"], [*short, "hellaswag"]))
        if short:
            cases.append(([f"recipe={recipe}/paper"], short))
    cases.append((["recipe=slimllm/paper", "finetune=lora_slimllm"], ["alpaca_cleaned"]))
    cases.append((["recipe=flap/paper", "finetune=lora_slimllm"], ["c4", "alpaca_cleaned"]))
    cases.append((["recipe=magnitude/paper", "finetune=lora_slimllm"], ["alpaca_cleaned"]))
    return cases


def test_every_paper_recipe_is_covered():
    assert sorted(RECIPE_CALIBRATION) == PAPER_RECIPES
    assert sorted(CALIBRATION_FITS_THE_HEAD) == sorted(r for r, calib in RECIPE_CALIBRATION.items() if calib)


@pytest.fixture
def nothing_loads(tmp_path, monkeypatch):
    from slimexp import pipeline
    from slimexp.models import loader

    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded or a run started")

    for module, name in [(loader, "load_model"), (pipeline, "load_model"), (pipeline, "load_tokenizer")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pipeline, "run", refuse)
    monkeypatch.setenv("SLIMEXP_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("overrides,heads", _paper_cases(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_scale_paper_on_a_head_slice_stops_before_loading(overrides, heads, nothing_loads, monkeypatch, capsys):
    from slimexp import cli

    tmp_path = nothing_loads
    argv = ["slimexp", *overrides, "scale=paper", "model=smollm2-135m", f"data.dir={SHARED_DATA}"]
    monkeypatch.setattr(sys, "argv", [*argv, f"hydra.run.dir={tmp_path}/hydra", f"hydra.sweep.dir={tmp_path}/multirun"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("slimexp: error: "), lines
    listed = lines[0].removeprefix("slimexp: error: ").split(f" in {SHARED_DATA} ")[0]
    assert [item.split("/")[0] for item in listed.split("), ")] == heads, lines[0]
    assert "scale=paper reads the full" in lines[0] and "slimexp-data fetch" in lines[0] and "data=hub" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "hydra").exists()


def test_scale_paper_passes_the_data_check_where_every_set_it_reads_is_full(nothing_loads):
    from slimexp.precheck import precheck

    # Magnitude reads only WikiText-2 test and PTB validation, which the shared folder holds whole.
    assert precheck(["recipe=magnitude/paper", "scale=paper", "model=smollm2-135m", f"data.dir={SHARED_DATA}"]) == 1


@pytest.mark.parametrize("recipe", sorted(r for r, fits in CALIBRATION_FITS_THE_HEAD.items() if fits))
def test_scale_paper_calibrates_on_a_head_slice_the_draw_fits_in(recipe, nothing_loads):
    from slimexp.precheck import precheck

    argv = [f"recipe={recipe}/paper", "scale=paper", "model=smollm2-135m", f"data.dir={SHARED_DATA}"]
    assert precheck(argv) == 1


def test_the_record_says_the_calibration_came_from_a_head_slice(tmp_path):
    from slimexp.evaluation.cost import PhaseTimer
    from slimexp.pipeline import prepare_inputs, resolve_config

    overrides = ["recipe=slimllm/paper", "prune.ratio=0.2", "scale=paper", f"data.dir={SHARED_DATA}"]
    protocol = prepare_inputs(resolve_config(config_for(tmp_path, *overrides)), PhaseTimer()).protocol
    assert protocol["dataset"] == "bookcorpus"
    assert protocol["data_slice"].startswith("head: bookcorpus/train (469 of "), protocol


def test_scale_cpu_reads_the_head_slices_as_before(nothing_loads):
    from slimexp.precheck import precheck

    assert precheck(["recipe=slimgpt/paper", "scale=cpu", "model=tiny-llama", f"data.dir={SHARED_DATA}"]) == 1


def test_the_zero_shot_sets_are_the_ones_lm_eval_loads_and_every_local_set_is_in_the_table():
    import yaml

    from slimexp.evaluation.zeroshot import TASKS, lm_eval_tasks_dir

    tasks_dir = lm_eval_tasks_dir()
    for task, spec in TASKS.items():
        path = tasks_dir / spec.official_yaml
        official = yaml.safe_load(path.read_text().replace("!function", ""))
        if "include" in official:  # ARC-Challenge takes its path from ARC-Easy's YAML
            official = {**yaml.safe_load((path.parent / official["include"]).read_text()), **official}
        name, split = Path(spec.local_file).parent.name, Path(spec.local_file).stem
        source = HUB_SOURCES[name]
        assert (source.hub_id, source.config) == (official["dataset_path"], official.get("dataset_name")), task
        assert source.splits[split].role == EVALUATION
    assert set(sources.DATASETS) < set(HUB_SOURCES)


def test_data_hub_reads_the_table(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda **kwargs: calls.append(kwargs) or [{"sentence": "a b"}])
    assert sources.load_texts("ptb", "validation") == ["a b"]
    assert calls == [
        {
            "path": "ptb-text-only/ptb_text_only",
            "name": None,
            "revision": "refs/convert/parquet",
            "split": "validation",
            "data_files": {"validation": "penn_treebank/validation/*.parquet"},
        }
    ]


@pytest.mark.integration
def test_the_refusal_is_one_line_on_the_real_command_line(tmp_path):
    """As a user sees it (no pytest log capture): the refusal alone, before the half
    precision warning a run that starts would log, in well under 30 s."""
    import os

    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    argv = ["recipe=slimgpt/paper", "scale=paper", "model=smollm2-135m", f"data.dir={SHARED_DATA}"]
    done = run_module("slimexp.cli", *argv, f"hydra.run.dir={tmp_path}/hydra", env=env, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "c4 has only 32 documents longer than 2048 tokens, 256 requested" in lines[0]
    assert not list(tmp_path.iterdir())
