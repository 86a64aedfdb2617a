"""`make bench`: pruning cost as ratios measured side by side in one run.

For each method, in its own process (so one method's freed memory does not hide the next
one's peak): pruning wall time / wall time of one dense forward pass over the same
calibration batch, and peak resident memory while pruning / dense model bytes. Ratios,
not seconds, because this machine is shared and noisy. The memory ratio is printed raw
(whole process) and net: minus the process before the model was loaded (interpreter,
torch, tokenizer) and minus the calibration activations the engine holds (inputs and
outputs of one layer, float32), the part DESIGN's target speaks of.

Then the resource planner's accuracy (bench/planner.py): each paper recipe run for real,
its plan of the pruning phase beside the measured peak memory and time (`--no-planner`
skips it: five real runs, minutes each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TARGETS = {"time_ratio": 4.0, "net_mem_ratio": 2.0}
# Methods measured with their own recipe's calibration (n_samples, seqlen, batch_size)
# instead of the shared batch: LLM-Pruner takes one backward pass over 10 × 64 tokens.
OWN_CALIBRATION = {"llm_pruner": (10, 64, 10)}


def method_from_conf(method_name: str):
    """The method as conf/method/<name>.yaml builds it (its own defaults, no recipe)."""
    from omegaconf import OmegaConf

    from slimexp.checks import build_method

    conf = os.path.join(os.path.dirname(__file__), "..", "conf", "method", f"{method_name}.yaml")
    method_cfg = OmegaConf.to_container(OmegaConf.load(conf), resolve=False)
    method_cfg.pop("seed", None)
    return build_method(method_cfg)


def measure(method_name: str, model_name: str, ratio: float, n_samples: int, seqlen: int, batch_size: int) -> dict:
    import torch

    from slimexp.data.calibration import sample_calibration
    from slimexp.evaluation.cost import PeakMemory, current_rss_bytes, model_bytes
    from slimexp.models.adapters import adapter_for
    from slimexp.models.loader import load_model, model_config_by_name
    from slimexp.pruning import surgery
    from slimexp.pruning.api import prune

    torch.set_num_threads(min(2, torch.get_num_threads()))
    n_samples, seqlen, batch_size = OWN_CALIBRATION.get(method_name, (n_samples, seqlen, batch_size))
    baseline_rss = current_rss_bytes()
    model, tokenizer = load_model(model_config_by_name(model_name))
    calibration = sample_calibration(
        tokenizer, "c4", n_samples=n_samples, seqlen=seqlen, data_dir=os.environ.get("SLIMEXP_DATA_DIR")
    ).input_ids
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(calibration), batch_size):
            model(calibration[i : i + batch_size], use_cache=False)
    forward_s = time.perf_counter() - start
    adapter = adapter_for(model)
    hidden = surgery.geometry(adapter.layers(model)[0], adapter).hidden
    method = method_from_conf(method_name)
    dense_bytes = model_bytes(model)
    activation_bytes = 2 * calibration.numel() * hidden * 4
    start = time.perf_counter()
    with PeakMemory() as memory:
        prune(model, method=method, ratio=ratio, calibration=calibration, batch_size=batch_size)
    prune_s = time.perf_counter() - start
    return {
        "method": method_name,
        "calibration": f"{n_samples}x{seqlen}",
        "prune_s": prune_s,
        "dense_forward_s": forward_s,
        "time_ratio": prune_s / forward_s,
        "peak_rss_gb": memory.peak_rss / 2**30,
        "model_gb": dense_bytes / 2**30,
        "raw_mem_ratio": memory.peak_rss / dense_bytes,
        "net_mem_ratio": (memory.peak_rss - baseline_rss - activation_bytes) / dense_bytes,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--methods", default="slimgpt,wanda_sp,flap,llm_pruner", help="comma-separated method config names"
    )
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-planner", action="store_true", help="skip the planner's planned-vs-measured table")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one method, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.model, args.ratio, args.n_samples, args.seqlen, args.batch_size)))
        return
    print(
        f"bench: {args.model}, ratio {args.ratio}, calibration {args.n_samples} × {args.seqlen} C4 tokens, "
        f"targets: time_ratio ≤ {TARGETS['time_ratio']}, net_mem_ratio ≤ {TARGETS['net_mem_ratio']}"
    )
    header = (
        "method",
        "calibration",
        "prune_s",
        "dense_forward_s",
        "time_ratio",
        "peak_rss_gb",
        "model_gb",
        "raw_mem_ratio",
        "net_mem_ratio",
    )
    print(" ".join(f"{h:>13}" for h in header))
    for name in args.methods.split(","):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "--one",
                name,
                "--model",
                args.model,
                "--ratio",
                str(args.ratio),
                "--n-samples",
                str(args.n_samples),
                "--seqlen",
                str(args.seqlen),
                "--batch-size",
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"{name:>13} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            " ".join(f"{row[h]:>13.2f}" if isinstance(row[h], float) else f"{row[h]:>13}" for h in header), flush=True
        )
    if not args.no_planner:
        from bench import planner

        print()
        planner.main(["--model", args.model, "--ratio", str(args.ratio)])


if __name__ == "__main__":
    main()
