"""The engine's statistics pass, stopped after its last role against the full layer pass.

`python -m bench.collect_speed [--methods slimgpt,slimllm,wanda_sp,flap] [--n-samples N]`

For each method, SmolLM2 is pruned twice in one process on the same C4 calibration:
once with `LayerwiseEngine.stop_after_last_role = False` (every batch runs the whole
layer, as before) and once stopping each batch's pass when every statistic is fed (an
attention pass then skips the FFN); the order alternates between methods. Prints the
pruning wall time of both, their ratio, and whether the pruned weights are identical
(they must be: the statistics are the same tensors).
"""

from __future__ import annotations

import argparse
import os
import time


def prune_once(method_name: str, model_name: str, ratio: float, calibration, early: bool):
    from bench.__main__ import method_from_conf
    from slimexp.models.loader import load_model, model_config_by_name
    from slimexp.pruning.api import prune
    from slimexp.pruning.engine import LayerwiseEngine

    model, _ = load_model(model_config_by_name(model_name))
    LayerwiseEngine.stop_after_last_role = early
    try:
        start = time.perf_counter()
        prune(model, method=method_from_conf(method_name), ratio=ratio, calibration=calibration, batch_size=8)
        return time.perf_counter() - start, model.state_dict()
    finally:
        LayerwiseEngine.stop_after_last_role = True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="slimgpt,slimllm,wanda_sp,flap")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=128)
    args = parser.parse_args(argv)

    import torch

    from slimexp.data.calibration import sample_calibration
    from slimexp.models.loader import load_model, model_config_by_name

    torch.set_num_threads(min(2, torch.get_num_threads()))
    _, tokenizer = load_model(model_config_by_name(args.model))
    calibration = sample_calibration(
        tokenizer, "c4", n_samples=args.n_samples, seqlen=args.seqlen, data_dir=os.environ.get("SLIMEXP_DATA_DIR")
    ).input_ids
    print(f"{args.model}, ratio {args.ratio}, C4 {args.n_samples} x {args.seqlen}: pruning wall time")
    print(f"{'method':10s} {'full pass s':>12s} {'stopped s':>10s} {'ratio':>6s}  identical weights")
    for i, name in enumerate(args.methods.split(",")):
        order = (False, True) if i % 2 == 0 else (True, False)
        runs = {early: prune_once(name, args.model, args.ratio, calibration, early) for early in order}
        (full_s, full), (early_s, stopped) = runs[False], runs[True]
        same = full.keys() == stopped.keys() and all(torch.equal(full[k], stopped[k]) for k in full)
        print(f"{name:10s} {full_s:12.1f} {early_s:10.1f} {early_s / full_s:6.3f}  {same}")


if __name__ == "__main__":
    main()
