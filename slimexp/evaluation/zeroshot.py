"""Zero-shot commonsense tasks through lm-eval-harness, on the in-memory (pruned) model.

With `data.dir`, each task runs from a YAML written at run time whose `include:` is the
installed official task YAML and which only swaps the data source for the local JSON
(`dataset_path: json`) and the split: prompts, choices, targets, preprocessing and
metrics are the official ones. Without it the official hub tasks run.

Every task reports acc and acc_norm where lm-eval defines them (BoolQ and WinoGrande: acc
only), with their standard errors. `zeroshot/avg` averages the paper's metric per task
(LLM-Pruner's tables, which both papers copy: acc_norm for HellaSwag, ARC-e, ARC-c and
OBQA, acc for the others); the record states which metric each task contributed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from slimexp.errors import SlimexpError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    official_yaml: str  # relative to lm_eval/tasks
    official_name: str
    local_file: str  # relative to data.dir
    split: str  # the split lm-eval evaluates (validation or test)


TASKS = {
    "boolq": TaskSpec("super_glue/boolq/default.yaml", "boolq", "boolq/validation.jsonl", "validation"),
    "piqa": TaskSpec("piqa/piqa.yaml", "piqa", "piqa/validation.jsonl", "validation"),
    "hellaswag": TaskSpec("hellaswag/hellaswag.yaml", "hellaswag", "hellaswag/validation.jsonl", "validation"),
    "winogrande": TaskSpec("winogrande/default.yaml", "winogrande", "winogrande/validation.jsonl", "validation"),
    "arc_easy": TaskSpec("arc/arc_easy.yaml", "arc_easy", "arc_easy/test.jsonl", "test"),
    "arc_challenge": TaskSpec("arc/arc_challenge.yaml", "arc_challenge", "arc_challenge/test.jsonl", "test"),
    "openbookqa": TaskSpec("openbookqa/openbookqa.yaml", "openbookqa", "openbookqa/test.jsonl", "test"),
}

PAPER_METRIC = {
    "boolq": "acc",
    "piqa": "acc",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "arc_easy": "acc_norm",
    "arc_challenge": "acc_norm",
    "openbookqa": "acc_norm",
}

LOCAL_PREFIX = "slimexp_"


def lm_eval_tasks_dir() -> Path:
    try:
        import lm_eval
    except ImportError as err:  # the `eval` extra
        raise SlimexpError("zero-shot evaluation needs lm-eval: pip install -e '.[eval]'") from err
    return Path(lm_eval.__file__).resolve().parent / "tasks"


def check_tasks(tasks: list[str]) -> None:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SlimexpError(f"unknown zero-shot task(s) {unknown}; known: {', '.join(TASKS)}")


def local_task_yaml(task: str, data_dir: str | Path) -> str:
    """The YAML that runs the official `task` on the local JSON copy of its eval split."""
    spec = TASKS[task]
    data_file = Path(data_dir).resolve() / spec.local_file
    if not data_file.is_file():
        raise SlimexpError(f"zero-shot task {task}: {data_file} not found")
    # Dumped, not formatted: a path holding ": ", "#" or a quote must stay one string.
    # None is YAML null: the split is absent, as the official task's own keys mean it.
    config = {
        "include": str(lm_eval_tasks_dir() / spec.official_yaml),
        "task": f"{LOCAL_PREFIX}{task}",
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {spec.split: str(data_file)}},
        "training_split": None,
        "fewshot_split": None,
        "validation_split": "validation" if spec.split == "validation" else None,
        "test_split": "test" if spec.split == "test" else None,
    }
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_local_tasks(tasks: list[str], data_dir: str | Path, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        # lm-eval reads task YAMLs as bytes (UTF-8), whatever the locale.
        (directory / f"{LOCAL_PREFIX}{task}.yaml").write_text(local_task_yaml(task, data_dir), encoding="utf-8")
    return directory


def task_names(tasks: list[str], local: bool) -> list[str]:
    return [f"{LOCAL_PREFIX}{t}" if local else TASKS[t].official_name for t in tasks]


SCORING = ("shared_context", "lm_eval")


def language_model(model, tokenizer, batch_size: int, device, scoring: str):
    """lm-eval's HFLM around the in-memory model; `shared_context` scores the choices of a
    document over one pass of its context (evaluation/shared_context.py), `lm_eval` is
    HFLM's own loop."""
    if scoring not in SCORING:
        raise SlimexpError(f"eval.zeroshot.scoring must be one of {SCORING}, got {scoring!r}")
    if scoring == "shared_context":
        from slimexp.evaluation.shared_context import SharedContextLM as language_model_class
    else:
        from lm_eval.models.huggingface import HFLM as language_model_class
    return language_model_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))


def zeroshot(
    model,
    tokenizer,
    tasks: list[str],
    data_dir: str | None,
    limit: int | None,
    batch_size: int,
    device,
    scoring: str = "shared_context",
) -> tuple[dict, dict, list[dict], dict]:
    """(metrics, protocol, per-task rows, per-document evidence) for the record."""
    check_tasks(tasks)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm = language_model(model, tokenizer, batch_size, device, scoring)
    with tempfile.TemporaryDirectory(prefix="slimexp-tasks-") as tmp:
        local = data_dir is not None
        # The local YAMLs include the official ones by path: indexing lm-eval's ~14,000 task
        # files (6-14 s a run) is only needed to find the hub tasks by name.
        manager = (
            TaskManager(include_path=str(write_local_tasks(tasks, data_dir, tmp)), include_defaults=False)
            if local
            else TaskManager()
        )
        names = task_names(tasks, local)
        output = simple_evaluate(
            model=lm,
            tasks=names,
            task_manager=manager,
            num_fewshot=0,
            limit=limit,
            log_samples=True,  # per-document correctness: runs are compared paired
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
    metrics, rows = task_metrics(output, tasks, names)
    evidence = per_document(output, tasks, names)
    return metrics, zeroshot_protocol(tasks, data_dir, limit, batch_size, scoring), rows, evidence


def zeroshot_protocol(tasks: list[str], data_dir: str | None, limit: int | None, batch_size: int, scoring: str) -> dict:
    return {
        "harness": "lm-eval",
        "lm_eval_version": metadata.version("lm_eval"),
        "tasks": {
            t: {
                "source": "local json" if data_dir else "hub",
                "split": TASKS[t].split,
                "official_yaml": TASKS[t].official_yaml,
                "paper_metric": PAPER_METRIC[t],
            }
            for t in tasks
        },
        "num_fewshot": 0,
        "limit": limit,
        "batch_size": batch_size,
        "scoring": scoring,  # shared_context: lm-eval's scores, each context computed once
        "average": (
            "mean over tasks of the paper metric "
            "(acc_norm: hellaswag, arc_easy, arc_challenge, openbookqa; acc: others)"
        ),
    }


def per_document(output: dict, tasks: list[str], names: list[str]) -> dict[str, dict[str, list]]:
    """Per task, lm-eval's logged correctness of every document (acc, and acc_norm where
    the task defines it), in doc_id order, so two runs of one protocol pair document by
    document."""
    evidence = {}
    for task, name in zip(tasks, names):
        samples = sorted(output.get("samples", {}).get(name, []), key=lambda sample: sample["doc_id"])
        entry = {"doc_id": [int(sample["doc_id"]) for sample in samples]}
        for metric in ("acc", "acc_norm"):
            if samples and metric in samples[0]:
                entry[metric] = [float(sample[metric]) for sample in samples]
        evidence[task] = entry
    return evidence


def task_metrics(output: dict, tasks: list[str], names: list[str]) -> tuple[dict, list[dict]]:
    """acc, acc_norm (where lm-eval defines it) and their stderr per task, the average of
    the paper metric per task, and one row per task for the record."""
    metrics, rows = {}, []
    for task, name in zip(tasks, names):
        result = output["results"][name]
        row = {"task": task, "n": output.get("n-samples", {}).get(name, {}).get("effective")}
        for metric in ("acc", "acc_norm"):
            value = result.get(f"{metric},none")
            if value is None:
                continue
            metrics[f"{metric}/{task}"] = float(value)
            stderr = result.get(f"{metric}_stderr,none")
            if isinstance(stderr, (int, float)):
                metrics[f"{metric}_stderr/{task}"] = float(stderr)
            row[metric] = float(value)
        row["paper_metric"] = PAPER_METRIC[task]
        rows.append(row)
    metrics["zeroshot/avg"] = sum(metrics[f"{PAPER_METRIC[t]}/{t}"] for t in tasks) / len(tasks)
    return metrics, rows
