"""`make bench` (also `python -m bench.loraprune_memory`): peak memory of LoRAPrune's
scoring beside LLM-Pruner's gradient pass, same model, same calibration, one run.

Each variant runs in its own process (a freed peak would hide the next one's). Measured:
peak resident memory while the method's `score_model` runs, minus the resident memory just
before it (model loaded, calibration drawn): what the scoring itself adds. Variants:
- loraprune: `steps` optimiser steps of LoRAPrune's training-with-scoring over the whole
  calibration batch (micro-batch = batch: one backward per step, as LLM-Pruner's pass);
- loraprune_micro: the same with micro-batches of `--micro` sequences;
- llm_pruner: one backward over the whole batch; our implementation reduces each weight's
  gradient to its row scores as soon as autograd accumulates it and frees it;
- llm_pruner_micro: calib.batch_size = `--micro` < n, so every weight's gradient is kept
  until the last micro-batch, as the authors' code keeps all `.grad`s.
Prints the table and the ratios loraprune / llm_pruner. Nothing is tuned to look good:
LoRAPrune's saving is the full-size weight gradients, which our LLM-Pruner mostly avoids.

Which side wins depends on the shape. On SmolLM2 (576 wide, 30 layers) activations dominate
and LoRAPrune's adapters add their own (one dropout copy of every projection's input).
`--model llama7b-layers` (with `--layers`, default 2) measures a random model whose layers
have LLaMA-2-7B's shape (4096 / 11008, 32 heads): weights dominate there, as in the paper's
setting, and the weight gradients LLM-Pruner keeps are what LoRAPrune saves.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

VARIANTS = ("loraprune", "loraprune_micro", "llm_pruner", "llm_pruner_micro")


# LLaMA-2-7B's decoder layer with SmolLM2's vocabulary (the tokenizer the random model borrows).
LLAMA7B_LAYER = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "head_dim": 128,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}


def model_config(name: str, layers: int) -> dict:
    from slimexp.models.loader import model_config_by_name

    if name != "llama7b-layers":
        return model_config_by_name(name)
    shape = {**LLAMA7B_LAYER, "num_hidden_layers": layers}
    return {"name": f"llama7b-layers-{layers}", "source": "random", "tokenizer": "smollm2-135m", "random_config": shape}


def measure(variant: str, model_cfg: dict, ratio: float, n: int, seqlen: int, micro: int, steps: int) -> dict:
    import torch

    from slimexp.data.calibration import sample_calibration
    from slimexp.evaluation.cost import PeakMemory, current_rss_bytes, model_bytes
    from slimexp.models.adapters import adapter_for
    from slimexp.models.loader import load_model
    from slimexp.pruning import surgery
    from slimexp.pruning.engine import LayerwiseEngine
    from slimexp.pruning.methods.llm_pruner import LLMPruner
    from slimexp.pruning.methods.loraprune import LoRAPrune
    from slimexp.pruning.plan import plan_layers

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, tokenizer = load_model(model_cfg)
    data_dir = os.environ.get("SLIMEXP_DATA_DIR")
    calibration = sample_calibration(tokenizer, "c4", n_samples=n, seqlen=seqlen, data_dir=data_dir).input_ids
    adapter = adapter_for(model)
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    targets = plan_layers(geometries, [ratio] * len(geometries), "kv_group", "round", True)
    batch = micro if variant.endswith("_micro") else n
    if variant.startswith("loraprune"):
        method = LoRAPrune(batch_size=n, micro_batch_size=batch, max_steps=steps, prune_freq=1)
    else:
        method = LLMPruner()
    engine = LayerwiseEngine(model, adapter, calibration, batch_size=batch)
    before = current_rss_bytes()
    start = time.perf_counter()
    with PeakMemory(cuda=False) as memory:
        method.score_model(engine, targets, "kv_group")
    return {
        "variant": variant,
        "calibration": f"{n}x{seqlen}",
        "micro_batch": batch,
        "backwards": steps * (n // batch) if variant.startswith("loraprune") else n // batch,
        "score_s": time.perf_counter() - start,
        "added_peak_gb": (memory.peak_rss - before) / 2**30,
        "model_gb": model_bytes(model) / 2**30,
    }


def _run_one(variant: str, args) -> dict | str:
    cmd = [sys.executable, "-m", "bench.loraprune_memory", "--one", variant, "--model", args.model]
    cmd += ["--ratio", str(args.ratio), "--n-samples", str(args.n_samples), "--seqlen", str(args.seqlen)]
    cmd += ["--micro", str(args.micro), "--steps", str(args.steps), "--layers", str(args.layers)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a conf/model name, or llama7b-layers")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of --model llama7b-layers")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--micro", type=int, default=4, help="micro-batch of the *_micro variants")
    parser.add_argument("--steps", type=int, default=2, help="LoRAPrune optimiser steps measured")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        row = measure(
            args.one,
            model_config(args.model, args.layers),
            args.ratio,
            args.n_samples,
            args.seqlen,
            args.micro,
            args.steps,
        )
        print(json.dumps(row))
        return
    shape = f"{args.model} ({args.layers} layers)" if args.model == "llama7b-layers" else args.model
    print(f"loraprune_memory: {shape}, C4 {args.n_samples} × {args.seqlen}, peak RSS added by score_model")
    header = ("variant", "calibration", "micro_batch", "backwards", "score_s", "added_peak_gb", "model_gb")
    print(" ".join(f"{h:>16}" for h in header))
    rows = {}
    for variant in VARIANTS:
        row = _run_one(variant, args)
        if isinstance(row, str):
            print(f"{variant:>16} failed: {row}")
            continue
        rows[variant] = row
        print(" ".join(f"{row[h]:>16.3f}" if isinstance(row[h], float) else f"{row[h]:>16}" for h in header))
    for ours, theirs in [("loraprune", "llm_pruner"), ("loraprune_micro", "llm_pruner_micro")]:
        if ours in rows and theirs in rows:
            ratio = rows[ours]["added_peak_gb"] / rows[theirs]["added_peak_gb"]
            print(f"{ours} / {theirs} added peak memory: {ratio:.2f}")


if __name__ == "__main__":
    main()
