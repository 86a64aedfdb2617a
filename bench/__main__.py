"""`make bench`: pruning cost as ratios measured side by side in one run.

For each method: pruning wall time / wall time of one dense forward pass over the same
calibration batch, and peak resident memory while pruning / dense model bytes. Ratios
(not seconds) because this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from slimexp.data.calibration import sample_calibration
from slimexp.evaluation.cost import PeakMemory, model_bytes
from slimexp.models.adapters import adapter_for
from slimexp.models.loader import load_model, model_config_by_name
from slimexp.pipeline import instantiate_method
from slimexp.pruning import surgery
from slimexp.pruning.engine import LayerwiseEngine
from slimexp.pruning.plan import plan_layers


def dense_forward_seconds(model, calibration, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(calibration), batch_size):
            model(calibration[i : i + batch_size], use_cache=False)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="wanda_sp", help="comma-separated method config names")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    data_dir = os.environ.get("SLIMEXP_DATA_DIR")
    conf = os.path.join(os.path.dirname(__file__), "..", "conf", "method")
    print(f"bench: {args.model}, ratio {args.ratio}, calibration {args.n_samples} × {args.seqlen} C4 tokens")
    print(f"{'method':<12} {'prune_s':>8} {'dense_fwd_s':>11} {'time_ratio':>10} {'peak_rss_gb':>11} {'model_gb':>8} {'mem_ratio':>9}")
    for name in args.methods.split(","):
        model, tokenizer = load_model(model_config_by_name(args.model))
        calibration = sample_calibration(tokenizer, "c4", args.n_samples, args.seqlen, 0, data_dir).input_ids
        forward_s = dense_forward_seconds(model, calibration, args.batch_size)
        adapter = adapter_for(model)
        geometries = [surgery.geometry(l, adapter) for l in adapter.layers(model)]
        targets = plan_layers(geometries, [args.ratio] * len(geometries), "kv_group", "round", True)
        method = instantiate_method(OmegaConf.to_container(OmegaConf.load(os.path.join(conf, f"{name}.yaml")), resolve=False))
        dense_bytes = model_bytes(model)
        start = time.perf_counter()
        with PeakMemory() as memory:
            LayerwiseEngine(model, adapter, calibration, args.batch_size).run(method, targets, "kv_group")
        prune_s = time.perf_counter() - start
        print(
            f"{name:<12} {prune_s:>8.1f} {forward_s:>11.1f} {prune_s / forward_s:>10.2f} "
            f"{memory.peak_rss / 2**30:>11.2f} {dense_bytes / 2**30:>8.2f} {memory.peak_rss / dense_bytes:>9.2f}"
        )
        del model


if __name__ == "__main__":
    main()
