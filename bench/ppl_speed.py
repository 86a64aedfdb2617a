"""Perplexity pass speed by batch size (`eval.ppl.batch_size`) and weight dtype, side by side.

`python -m bench.ppl_speed [--model NAME] [--windows N] [--batch-sizes 8,32] [--dtypes float32,bfloat16] [--repeats R]`

In one process, on one model and the same WikiText-2 windows (seqlen 128, as the papers'
protocol and the catalog), each batch size (and weight dtype) scores every window, the
variants taking turns `--repeats` times. Prints the fastest pass per variant, its ratio to
the first, and the largest relative difference of any window's NLL, and of the perplexity,
from the first's (the batch size is not hashed: it must not move a number beyond 1e-6
relative; 0.0 means identical bits). Another dtype is a protocol change (`dtype` is
hashed): the bench says what it would buy and what it would move.
"""

from __future__ import annotations

import argparse
import copy
import os
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from slimexp.data.sources import load_texts
    from slimexp.evaluation.perplexity import token_windows, window_nll
    from slimexp.models.loader import load_model, model_config_by_name, torch_dtype

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, tokenizer = load_model(model_config_by_name(args.model))
    model.eval()
    models = {name: _in_dtype(model, torch_dtype(name)) for name in args.dtypes.split(",")}
    texts = load_texts("wikitext2", "test", os.environ.get("SLIMEXP_DATA_DIR"))
    windows = token_windows(tokenizer, texts, "\n\n", args.seqlen, args.windows)
    variants = [(name, int(size)) for name in models for size in args.batch_sizes.split(",")]
    seconds: dict[tuple, list[float]] = {variant: [] for variant in variants}
    nll: dict[tuple, torch.Tensor] = {}
    for repeat in range(args.repeats):
        for name, size in variants if repeat % 2 == 0 else reversed(variants):
            start = time.perf_counter()
            nll[name, size] = window_nll(models[name], windows, size, "cpu", desc=f"{name} {size}").double()
            seconds[name, size].append(time.perf_counter() - start)
    first = variants[0]
    print(f"{args.model}, WikiText-2, {len(windows)} windows x {args.seqlen}: fastest of {args.repeats} passes")
    print(f"{'dtype':>9s} {'batch':>6s} {'seconds':>8s} {'ratio':>6s}  largest relative NLL difference, perplexity's")
    for variant in variants:
        difference = float(((nll[variant] - nll[first]).abs() / nll[first].abs()).max())
        perplexity = float(torch.expm1((nll[variant].mean() - nll[first].mean()) / (args.seqlen - 1)).abs())
        fastest = min(seconds[variant])
        ratio = fastest / min(seconds[first])
        print(f"{variant[0]:>9s} {variant[1]:6d} {fastest:8.2f} {ratio:6.3f}  {difference:.3g}, {perplexity:.3g}")


def _in_dtype(model, dtype):
    return model if next(model.parameters()).dtype == dtype else copy.deepcopy(model).to(dtype)


if __name__ == "__main__":
    main()
