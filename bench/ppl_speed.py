"""Perplexity pass speed by batch size (`eval.ppl.batch_size`), side by side.

`python -m bench.ppl_speed [--model NAME] [--windows N] [--batch-sizes 8,32] [--repeats R]`

In one process, on one model and the same WikiText-2 windows (seqlen 128, as the papers'
protocol and the catalog), each batch size scores every window, the sizes taking turns
`--repeats` times. Prints the fastest pass per size, its ratio to the first size, and the
largest relative difference of any window's NLL from the first size's (the batch size is
not hashed: it must not move a number beyond 1e-6 relative; 0.0 means identical bits).
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from slimexp.data.sources import load_texts
    from slimexp.evaluation.perplexity import token_windows, window_nll
    from slimexp.models.loader import load_model, model_config_by_name

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, tokenizer = load_model(model_config_by_name(args.model))
    model.eval()
    texts = load_texts("wikitext2", "test", os.environ.get("SLIMEXP_DATA_DIR"))
    windows = token_windows(tokenizer, texts, "\n\n", args.seqlen, args.windows)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    nll: dict[int, torch.Tensor] = {}
    for repeat in range(args.repeats):
        for size in sizes if repeat % 2 == 0 else reversed(sizes):
            start = time.perf_counter()
            nll[size] = window_nll(model, windows, size, "cpu", desc=f"batch {size}")
            seconds[size].append(time.perf_counter() - start)
    first = sizes[0]
    print(f"{args.model}, WikiText-2, {len(windows)} windows x {args.seqlen}: fastest of {args.repeats} passes")
    print(f"{'batch':>6s} {'seconds':>8s} {'ratio':>6s}  largest relative NLL difference")
    for size in sizes:
        difference = float(((nll[size] - nll[first]).abs() / nll[first].abs()).max())
        ratio = min(seconds[size]) / min(seconds[first])
        print(f"{size:6d} {min(seconds[size]):8.2f} {ratio:6.3f}  {difference:.3g}")


if __name__ == "__main__":
    main()
