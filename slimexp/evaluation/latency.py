"""Inference latency as SlimLLM Table 3 measures it: the prefill of `prefill_tokens` tokens
and the decoding of `decode_tokens` new tokens at batch `decode_batch`, each repeated
after warm-up runs, on the current device. The paper averages 20 repeats; we report the
median (robust on a shared machine) and the mean beside it.

With a dense reference model, both are timed in the same process with their repeats
interleaved, and the pruned/dense ratios are recorded: seconds taken hours apart on a
shared machine (a pruned run and the dense run it is compared with) can differ by a third
from load alone, while the interleaved ratio does not drift with it."""

from __future__ import annotations

import statistics
import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved_seconds(fns: dict, repeats: int, warmup: int, device) -> dict[str, list[float]]:
    """Per name, the seconds of each repeat; the names take turns within every repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


PROTOCOL_KEYS = ("prefill_tokens", "prefill_batch", "decode_tokens", "decode_batch", "decode_prompt_tokens", "repeats",
                 "warmup")  # fmt: skip


@torch.no_grad()
def latency(model, cfg: dict, device, vocab_size: int, dense=None) -> tuple[dict, dict]:
    """(metrics, protocol). Token ids are drawn from a fixed seed: content does not change
    the cost of a dense forward. `dense`, if given, is timed beside `model`."""
    generator = torch.Generator().manual_seed(0)
    prefill = torch.randint(0, vocab_size, (cfg["prefill_batch"], cfg["prefill_tokens"]), generator=generator)
    prompt = torch.randint(0, vocab_size, (cfg["decode_batch"], cfg["decode_prompt_tokens"]), generator=generator)
    prefill, prompt = prefill.to(device), prompt.to(device)
    models = {"": model} if dense is None else {"": model, "dense_": dense}
    for m in models.values():
        m.eval()
    repeats, warmup = cfg["repeats"], cfg["warmup"]
    prefill_all = _interleaved_seconds(
        {name: (lambda m=m: m(prefill, use_cache=False)) for name, m in models.items()}, repeats, warmup, device
    )
    decode_all = _interleaved_seconds(
        {name: (lambda m=m: _decode(m, prompt, cfg["decode_tokens"])) for name, m in models.items()},
        repeats, warmup, device,
    )  # fmt: skip
    protocol = {
        **{k: cfg[k] for k in PROTOCOL_KEYS},
        "statistic": "median",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dense_reference": "interleaved in the same process" if dense is not None else None,
    }
    metrics = {}
    for name in models:
        metrics.update(_medians(name, prefill_all[name], decode_all[name], cfg["decode_batch"] * cfg["decode_tokens"]))
        protocol[f"{name}prefill_s_all"] = prefill_all[name]
        protocol[f"{name}decode_s_all"] = decode_all[name]
    if dense is not None:
        metrics["latency/prefill_ratio"] = metrics["latency/prefill_s"] / metrics["latency/dense_prefill_s"]
        metrics["latency/decode_ratio"] = metrics["latency/decode_s"] / metrics["latency/dense_decode_s"]
    return metrics, protocol


def _decode(model, prompt: torch.Tensor, n_new: int) -> None:
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new, min_new_tokens=n_new,
                         do_sample=False, pad_token_id=0)  # fmt: skip
    assert out.shape[1] == prompt.shape[1] + n_new


def _medians(name: str, prefill: list[float], decode: list[float], new_tokens: int) -> dict[str, float]:
    prefill_s, decode_s = statistics.median(prefill), statistics.median(decode)
    return {
        f"latency/{name}prefill_s": prefill_s,
        f"latency/{name}decode_s": decode_s,
        f"latency/{name}prefill_mean_s": statistics.mean(prefill),
        f"latency/{name}decode_mean_s": statistics.mean(decode),
        f"latency/{name}decode_tokens_per_s": new_tokens / decode_s,
    }
