"""Zero-shot tasks: the local YAMLs build exactly the official tasks' requests."""

import json

import datasets
import pytest

pytest.importorskip("lm_eval")

from slimexp.evaluation.zeroshot import PAPER_METRIC, TASKS, local_task_yaml, task_names, write_local_tasks  # noqa: E402

ROWS = 25


def _requests(task_obj, limit=ROWS):
    task_obj.build_all_requests(limit=limit, rank=0, world_size=1)
    return [(inst.doc_id, inst.idx, inst.arguments) for inst in task_obj.instances]


def _local_dataset(data_dir, task):
    spec = TASKS[task]
    return datasets.load_dataset("json", data_files={spec.split: str(data_dir / spec.local_file)})


@pytest.mark.parametrize("task", list(TASKS))
def test_local_yaml_builds_the_official_requests(task, data_dir, tmp_path, monkeypatch):
    """The official task, fed the same local rows in place of the hub download, builds the
    same (context, continuation) requests as our local YAML, in the same order."""
    from pathlib import Path

    from lm_eval.tasks import TaskManager, get_task_dict

    data_dir = Path(data_dir)
    local_dir = write_local_tasks([task], data_dir, tmp_path / "tasks")
    local = get_task_dict(task_names([task], True), TaskManager(include_path=str(local_dir)))
    local_task = local[task_names([task], True)[0]]
    local_requests = _requests(local_task)

    rows = _local_dataset(data_dir, task)
    # The official constructor also reads its train split (few-shot pool; we run 0-shot).
    rows["train"] = rows[TASKS[task].split]
    calls = []

    def offline_load_dataset(*args, **kwargs):
        calls.append(kwargs.get("path", args[0] if args else None))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", offline_load_dataset)
    official = get_task_dict([TASKS[task].official_name], TaskManager())
    official_task = official[TASKS[task].official_name]
    official_requests = _requests(official_task)

    assert calls, "the official task did not load its data through datasets.load_dataset"
    assert len(local_requests) >= ROWS * 2
    assert local_requests == official_requests
    first = local_requests[0][2]
    assert isinstance(first[0], str) and isinstance(first[1], str) and first[1]
    assert local_task.config.metric_list == official_task.config.metric_list
    assert local_task.config.output_type == official_task.config.output_type == "multiple_choice"


def test_local_yaml_points_at_the_official_yaml_and_the_local_file(data_dir):
    text = local_task_yaml("arc_challenge", data_dir)
    assert "lm_eval/tasks/arc/arc_challenge.yaml" in text
    assert "dataset_path: json" in text and "arc_challenge/test.jsonl" in text
    assert "test_split: test" in text and "validation_split: null" in text


def test_a_data_dir_with_yaml_syntax_in_its_name_loads_back(data_dir, tmp_path):
    """A space, ": ", "#" and quotes in the path stay one string, and None stays YAML null."""
    from pathlib import Path

    import yaml
    from lm_eval.tasks import TaskManager, get_task_dict

    awkward = tmp_path / "my data: #1 'q\" x"
    (awkward / "arc_challenge").mkdir(parents=True)
    rows = (Path(data_dir) / "arc_challenge" / "test.jsonl").read_text().splitlines()[:5]
    (awkward / "arc_challenge" / "test.jsonl").write_text("\n".join(rows) + "\n")
    loaded = yaml.safe_load(local_task_yaml("arc_challenge", awkward))
    assert loaded["dataset_kwargs"] == {"data_files": {"test": str(awkward.resolve() / "arc_challenge" / "test.jsonl")}}
    assert loaded["include"].endswith("lm_eval/tasks/arc/arc_challenge.yaml")
    assert loaded["task"] == "slimexp_arc_challenge" and loaded["tag"] == [] and loaded["dataset_path"] == "json"
    nulls = ("dataset_name", "training_split", "fewshot_split", "validation_split")
    assert all(key in loaded and loaded[key] is None for key in nulls)
    assert loaded["test_split"] == "test"
    piqa_dir = tmp_path / "piqa: #2"
    (piqa_dir / "piqa").mkdir(parents=True)
    (piqa_dir / "piqa" / "validation.jsonl").write_text("{}\n")
    piqa = yaml.safe_load(local_task_yaml("piqa", piqa_dir))
    assert piqa["validation_split"] == "validation" and piqa["test_split"] is None
    # lm-eval itself reads the written file and loads the rows from the awkward path.
    tasks = write_local_tasks(["arc_challenge"], awkward, tmp_path / "tasks")
    name = task_names(["arc_challenge"], True)[0]
    task = get_task_dict([name], TaskManager(include_path=str(tasks)))[name]
    assert len(task.test_docs()) == 5


def test_an_unknown_task_or_missing_file_is_a_clear_error(tmp_path):
    from slimexp.errors import SlimexpError
    from slimexp.evaluation.zeroshot import check_tasks

    with pytest.raises(SlimexpError, match="unknown zero-shot task"):
        check_tasks(["piqa", "mmlu"])
    with pytest.raises(SlimexpError, match="not found"):
        local_task_yaml("piqa", tmp_path)


def test_every_task_has_a_paper_metric():
    assert set(PAPER_METRIC) == set(TASKS)
    assert {PAPER_METRIC[t] for t in ("hellaswag", "openbookqa")} == {"acc_norm"}
    assert json.dumps(PAPER_METRIC)
