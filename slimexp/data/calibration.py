"""Calibration sets: n samples × seqlen tokens, drawn with a seeded private RNG.

`document` sampling (SparseGPT/GPTQ style, as SlimGPT and FLAP-repo baselines use on C4):
distinct documents with more than seqlen tokens, one random window each. `stream`
sampling: random non-overlapping windows of the concatenated rows, needed for BookCorpus,
whose rows are single short sentences (the authors' "rows with ≥ N tokens" rule finds
none in our slice). The record states which was used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from slimexp.data.sources import load_texts, spec
from slimexp.errors import SlimexpError

SAMPLINGS = ("document", "stream")


@dataclass
class CalibrationSet:
    input_ids: torch.Tensor  # (n_samples, seqlen), long
    protocol: dict = field(default_factory=dict)


def sample_calibration(
    tokenizer,
    dataset: str,
    *,
    n_samples: int,
    seqlen: int,
    seed: int = 0,
    data_dir: str | None = None,
    sampling: str = "document",
    split: str | None = None,
    joiner: str = "\n\n",
) -> CalibrationSet:
    if n_samples < 1 or seqlen < 2:
        raise SlimexpError(f"calibration needs n_samples ≥ 1 and seqlen ≥ 2 (got {n_samples} × {seqlen})")
    if sampling not in SAMPLINGS:
        raise SlimexpError(f"calib.sampling must be one of {SAMPLINGS}, got '{sampling}'")
    rng = random.Random(seed)
    texts = load_texts(dataset, split, data_dir)
    source_windows = None
    if sampling == "document":
        samples = _document_windows(tokenizer, texts, n_samples, seqlen, rng, dataset)
    else:
        samples, source_windows = _stream_windows(tokenizer, texts, n_samples, seqlen, rng, dataset, joiner)
    protocol = {
        "dataset": dataset,
        "split": split or spec(dataset).default_split,
        "n_samples": n_samples,
        "seqlen": seqlen,
        "seed": seed,
        "sampling": sampling,
    }
    if sampling == "stream":
        protocol["joiner"] = joiner
        # A draw of every window is the same set at every seed: slimexp.tracking.store.seed_independent.
        protocol["source_windows"] = source_windows
    return CalibrationSet(torch.tensor(samples, dtype=torch.long), protocol)


def sample_as_configured(tokenizer, calib: dict, data_dir: str | None, run_seed: int = 0) -> CalibrationSet:
    """The draw a run's `calib` block asks for. The run's `seed` shifts the recipe's draw
    seed (calib.seed + seed), so sweeping `seed` gives every method a new draw while seed 0
    keeps each recipe's published one."""
    drawn = sample_calibration(
        tokenizer,
        calib["dataset"],
        n_samples=calib["n_samples"],
        seqlen=calib["seqlen"],
        seed=calib["seed"] + run_seed,
        data_dir=data_dir,
        sampling=calib["sampling"],
        split=calib.get("split"),
    )
    if run_seed:
        drawn.protocol["seed_from"] = {"calib.seed": calib["seed"], "seed": run_seed}
    return drawn


def _document_windows(tokenizer, texts, n_samples, seqlen, rng, dataset):
    order = list(range(len(texts)))
    rng.shuffle(order)
    samples: list[list[int]] = []
    for index in order:
        ids = tokenizer(texts[index])["input_ids"]
        if len(ids) <= seqlen:
            continue
        start = rng.randint(0, len(ids) - seqlen - 1)
        samples.append(ids[start : start + seqlen])
        if len(samples) == n_samples:
            return samples
    raise SlimexpError(
        f"calibration larger than the data: {dataset} has only {len(samples)} documents longer than "
        f"{seqlen} tokens, {n_samples} requested (lower calib.n_samples/seqlen or use calib.sampling=stream)"
    )


def _stream_windows(tokenizer, texts, n_samples, seqlen, rng, dataset, joiner):
    ids = tokenizer(joiner.join(texts))["input_ids"]
    n_windows = len(ids) // seqlen
    if n_windows < n_samples:
        raise SlimexpError(
            f"calibration larger than the data: {dataset} holds {n_windows} windows of {seqlen} tokens, "
            f"{n_samples} requested"
        )
    starts = sorted(rng.sample(range(n_windows), n_samples))
    return [ids[w * seqlen : (w + 1) * seqlen] for w in starts], n_windows
