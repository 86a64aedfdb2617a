"""Perplexity with the papers' protocol (LLM-Pruner's evaluator, DESIGN §6).

All rows joined with a joiner ("\\n\\n"), tokenised in one call with the tokenizer's
default special tokens, cut into numel // seqlen non-overlapping windows (the partial
last one dropped), no context across windows; PPL = exp(mean token cross-entropy).
`max_windows` keeps a prefix: a prefix is biased, so compare only equal prefixes.

`bos`: `stream` (the papers') tokenises as above, so only window 0 starts with the BOS
token the tokenizer adds. Models trained to always see a BOS first (Gemma-3) are far off
without one: on Gemma-3-270M the first 32 WikiText-2 windows give 365 (46 per_window),
window 0 alone 21. `per_window` tokenises without special tokens, cuts windows of
seqlen - 1 tokens and puts BOS before each, so every window starts as the stream's window
0 does (for a tokenizer that adds just a BOS, window 0 is the same); the BOS is context
only, so both modes score seqlen - 1 tokens per window.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from slimexp.data.sources import load_texts, spec
from slimexp.errors import SlimexpError

# Split and joiner per data set, as the papers' tables use them (PTB "test" there is the
# validation split, which LLM-Pruner's loader returns under that name).
PAPER_PROTOCOL = {
    "wikitext2": {"split": "test", "joiner": "\n\n"},
    "ptb": {"split": "validation", "joiner": "\n\n"},
}


BOS_MODES = ("stream", "per_window")


def token_windows(
    tokenizer, texts: list[str], joiner: str, seqlen: int, max_windows: int | None, bos: str = "stream"
) -> torch.Tensor:
    if bos not in BOS_MODES:
        raise SlimexpError(f"eval.ppl.bos must be one of {BOS_MODES}, got {bos!r}")
    if bos == "stream":
        ids = tokenizer(joiner.join(texts), return_tensors="pt")["input_ids"][0]
        width = seqlen
    else:
        if tokenizer.bos_token_id is None:
            raise SlimexpError("eval.ppl.bos=per_window needs a tokenizer with a BOS token")
        ids = tokenizer(joiner.join(texts), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        width = seqlen - 1
    n_windows = ids.numel() // width
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    windows = ids[: n_windows * width].view(n_windows, width)
    if bos == "per_window":
        windows = torch.cat([torch.full((n_windows, 1), tokenizer.bos_token_id, dtype=windows.dtype), windows], 1)
    return windows


@torch.no_grad()
def window_nll(model, windows: torch.Tensor, batch_size: int, device, desc: str = "ppl") -> torch.Tensor:
    """Summed next-token NLL per window (float64), each window scored on its own."""
    totals = []
    for start in tqdm(range(0, len(windows), batch_size), desc=desc, leave=False):
        batch = windows[start : start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="none"
        )
        totals.append(nll.view(len(batch), -1).sum(1).double().cpu())
    return torch.cat(totals)


def perplexity(*args, **kwargs) -> tuple[float, dict]:
    """(ppl, protocol): `scored_windows` without the per-window evidence."""
    ppl, protocol, _ = scored_windows(*args, **kwargs)
    return ppl, protocol


def scored_windows(
    model,
    tokenizer,
    dataset: str,
    data_dir: str | None,
    seqlen: int,
    max_windows: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    split: str | None = None,
    joiner: str | None = None,
    bos: str = "stream",
) -> tuple[float, dict, list[float]]:
    """(ppl, protocol, mean NLL of each window): the protocol states exactly what was
    measured; the per-window NLLs let two runs of one protocol be compared paired."""
    defaults = PAPER_PROTOCOL.get(dataset, {"split": spec(dataset).default_split, "joiner": "\n\n"})
    split = split or defaults["split"]
    joiner = defaults["joiner"] if joiner is None else joiner
    windows = token_windows(tokenizer, load_texts(dataset, split, data_dir), joiner, seqlen, max_windows, bos)
    nll = window_nll(model, windows, batch_size, device, desc=f"ppl {dataset}")
    n_tokens = windows.numel() - len(windows)
    ppl = math.exp(nll.sum().item() / n_tokens)
    protocol = {
        "dataset": dataset,
        "split": split,
        "joiner": joiner,
        "seqlen": seqlen,
        "windows": len(windows),
        "max_windows": max_windows,
        "tokens_scored": n_tokens,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "bos": bos,  # stream: the tokenizer's own special tokens, once; per_window: BOS + seqlen-1 tokens
        "bos_added": bool(tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id)
        if tokenizer.bos_token_id is not None
        else False,
    }
    per_window = (nll / (windows.shape[1] - 1)).tolist()
    return ppl, protocol, per_window
