"""Inference latency as SlimLLM Table 3 measures it: the prefill of `prefill_tokens` tokens
and the decoding of `decode_tokens` new tokens at batch `decode_batch`, each repeated
after warm-up runs, on the current device. The paper averages 20 repeats; we report the
median (robust on a shared machine) and the mean beside it."""

from __future__ import annotations

import statistics
import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, repeats: int, warmup: int, device) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


@torch.no_grad()
def latency(model, cfg: dict, device, vocab_size: int) -> tuple[dict, dict]:
    """(metrics, protocol). Token ids are drawn from a fixed seed: content does not change
    the cost of a dense forward."""
    generator = torch.Generator().manual_seed(0)
    prefill = torch.randint(0, vocab_size, (cfg["prefill_batch"], cfg["prefill_tokens"]), generator=generator).to(device)
    prompt = torch.randint(0, vocab_size, (cfg["decode_batch"], cfg["decode_prompt_tokens"]), generator=generator).to(device)
    n_new = cfg["decode_tokens"]
    model.eval()
    prefill_s, prefill_all = _median_seconds(lambda: model(prefill, use_cache=False), cfg["repeats"], cfg["warmup"], device)

    def decode():
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new, min_new_tokens=n_new,
            do_sample=False, pad_token_id=0,
        )
        assert out.shape[1] == prompt.shape[1] + n_new

    decode_s, decode_all = _median_seconds(decode, cfg["repeats"], cfg["warmup"], device)
    metrics = {
        "latency/prefill_s": prefill_s,
        "latency/decode_s": decode_s,
        "latency/prefill_mean_s": statistics.mean(prefill_all),
        "latency/decode_mean_s": statistics.mean(decode_all),
        "latency/decode_tokens_per_s": cfg["decode_batch"] * n_new / decode_s,
    }
    protocol = {
        **{k: cfg[k] for k in ("prefill_tokens", "prefill_batch", "decode_tokens", "decode_batch",
                               "decode_prompt_tokens", "repeats", "warmup")},
        "statistic": "median",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "prefill_s_all": prefill_all,
        "decode_s_all": decode_all,
    }
    return metrics, protocol
