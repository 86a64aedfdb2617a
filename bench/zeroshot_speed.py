"""Zero-shot evaluation speed: shared-context scoring against lm-eval's own, side by side.

`python -m bench.zeroshot_speed [--limit N] [--model NAME] [--batch-size B]`
`python -m bench.zeroshot_speed --batch-sizes 8,32 [--limit N]`

In one process, on one model: the seven tasks through `eval.zeroshot.scoring=lm_eval`
(HFLM's loop), then through `shared_context`, then each once more in the other order, and
the task index built with and without lm-eval's ~14,000 bundled task files. Prints the
ratios (this machine is shared and noisy: seconds alone do not compare across runs) and
the agreement: the largest log-likelihood difference over all requests and the documents
whose acc or acc_norm differ (0 is the claim). With `--batch-sizes A,B`: shared-context
scoring at batch A against batch B instead (`eval.zeroshot.batch_size`, not hashed), each
twice in turns, with the same agreement measures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def record_answers(cls, store: list) -> None:
    """Wrap `cls._loglikelihood_tokens` so its (request, answer) pairs land in `store`."""
    original = cls.__dict__["_loglikelihood_tokens"]

    def wrapper(self, requests, disable_tqdm=False, override_bs=None):
        answers = original(self, requests, disable_tqdm, override_bs)
        store.extend(zip(requests, answers))
        return answers

    cls._loglikelihood_tokens = wrapper


def task_index_seconds(data_dir: str) -> tuple[float, float]:
    from lm_eval.tasks import TaskManager

    from slimexp.evaluation.zeroshot import write_local_tasks

    with tempfile.TemporaryDirectory() as tmp:
        path = str(write_local_tasks(TASKS, data_dir, tmp))
        start = time.perf_counter()
        TaskManager(include_path=path)
        with_defaults = time.perf_counter() - start
        start = time.perf_counter()
        TaskManager(include_path=path, include_defaults=False)
        return with_defaults, time.perf_counter() - start


def agreement(reference: list, shared: list, ref_evidence: dict, shared_evidence: dict) -> tuple[float, int, int]:
    """(largest relative log-likelihood difference, requests compared, documents differing)."""
    by_request = {(tuple(ctx), tuple(cont)): answer[0] for (_, ctx, cont), answer in reference}
    worst, compared = 0.0, 0
    for (_, ctx, cont), (value, _) in shared:
        ref = by_request[(tuple(ctx), tuple(cont))]
        worst = max(worst, abs(value - ref) / max(abs(ref), 1e-12))
        compared += 1
    differing = 0
    for task, entry in ref_evidence.items():
        other = shared_evidence[task]
        for metric in ("acc", "acc_norm"):
            differing += sum(a != b for a, b in zip(entry.get(metric, []), other.get(metric, [])))
    return worst, compared, differing


def batch_comparison(model, tokenizer, data_dir: str, limit: int, sizes: list[int]) -> None:
    from slimexp.evaluation.shared_context import SharedContextLM
    from slimexp.evaluation.zeroshot import zeroshot

    collected: list = []
    record_answers(SharedContextLM, collected)
    answers, seconds, evidence = {}, dict.fromkeys(sizes, 0.0), {}
    for size in [*sizes, *reversed(sizes)]:
        before, start = len(collected), time.perf_counter()
        _, _, _, evidence[size] = zeroshot(model, tokenizer, TASKS, data_dir, limit, size, "cpu", "shared_context")
        seconds[size] += time.perf_counter() - start
        answers.setdefault(size, collected[before:])
    first, second = sizes
    worst, compared, differing = agreement(answers[first], answers[second], evidence[first], evidence[second])
    print(f"{len(TASKS)} tasks x {limit} documents, shared_context, two passes each")
    print(
        f"zero-shot wall time  batch {first} {seconds[first]:.1f} s  batch {second} {seconds[second]:.1f} s"
        f"  ratio {seconds[second] / seconds[first]:.3f}"
    )
    print(
        f"agreement            {compared} requests, largest relative log-likelihood difference {worst:.2e};"
        f" documents whose acc/acc_norm differ: {differing}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=20, help="documents per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-sizes", help="A,B: shared_context at batch A against batch B instead")
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM

    from slimexp.evaluation.shared_context import SharedContextLM
    from slimexp.evaluation.zeroshot import zeroshot
    from slimexp.models.loader import load_model, model_config_by_name

    torch.set_num_threads(min(2, torch.get_num_threads()))
    data_dir = os.environ.get("SLIMEXP_DATA_DIR")
    model, tokenizer = load_model(model_config_by_name(args.model))
    if args.batch_sizes:
        batch_comparison(model, tokenizer, data_dir, args.limit, [int(s) for s in args.batch_sizes.split(",")])
        return
    answers = {"lm_eval": [], "shared_context": []}
    record_answers(HFLM, answers["lm_eval"])
    record_answers(SharedContextLM, answers["shared_context"])
    seconds = {"lm_eval": 0.0, "shared_context": 0.0}
    evidence = {}
    for scoring in ("lm_eval", "shared_context", "shared_context", "lm_eval"):
        start = time.perf_counter()
        _, _, _, evidence[scoring] = zeroshot(
            model, tokenizer, TASKS, data_dir, args.limit, args.batch_size, "cpu", scoring
        )
        seconds[scoring] += time.perf_counter() - start
    # HFLM's wrapper also saw shared_context's fallback requests; keep the first pass of each.
    n = len(answers["shared_context"]) // 2
    reference = answers["lm_eval"][: len(answers["lm_eval"]) // 2]
    worst, compared, differing = agreement(
        reference, answers["shared_context"][:n], evidence["lm_eval"], evidence["shared_context"]
    )
    with_defaults, local_only = task_index_seconds(data_dir)
    print(f"{args.model}, {len(TASKS)} tasks x {args.limit} documents, batch {args.batch_size}, two passes each")
    print(
        f"zero-shot wall time  lm_eval {seconds['lm_eval']:.1f} s  shared_context {seconds['shared_context']:.1f} s"
        f"  ratio {seconds['shared_context'] / seconds['lm_eval']:.3f}"
    )
    print(
        f"task index           with lm-eval's tasks {with_defaults:.1f} s  local only {local_only:.2f} s"
        f"  ratio {local_only / with_defaults:.3f}"
    )
    print(
        f"agreement            {compared} requests, largest relative log-likelihood difference {worst:.2e};"
        f" documents whose acc/acc_norm differ: {differing}"
    )


if __name__ == "__main__":
    main()
