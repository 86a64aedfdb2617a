"""Perplexity with the papers' protocol (LLM-Pruner's evaluator, DESIGN §6).

All rows joined with a joiner ("\\n\\n"), tokenised in one call with the tokenizer's
default special tokens, cut into numel // seqlen non-overlapping windows (the partial
last one dropped), no context across windows; PPL = exp(mean token cross-entropy).
`max_windows` keeps a prefix: a prefix is biased, so compare only equal prefixes.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from slimexp.data.sources import load_texts, spec

# Split and joiner per data set, as the papers' tables use them (PTB "test" there is the
# validation split, which LLM-Pruner's loader returns under that name).
PAPER_PROTOCOL = {
    "wikitext2": {"split": "test", "joiner": "\n\n"},
    "ptb": {"split": "validation", "joiner": "\n\n"},
}


def token_windows(tokenizer, texts: list[str], joiner: str, seqlen: int, max_windows: int | None) -> torch.Tensor:
    ids = tokenizer(joiner.join(texts), return_tensors="pt")["input_ids"][0]
    n_windows = ids.numel() // seqlen
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    return ids[: n_windows * seqlen].view(n_windows, seqlen)


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


def perplexity(
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
) -> tuple[float, dict]:
    """Return (ppl, protocol) where protocol states exactly what was measured."""
    defaults = PAPER_PROTOCOL.get(dataset, {"split": spec(dataset).default_split, "joiner": "\n\n"})
    split = split or defaults["split"]
    joiner = defaults["joiner"] if joiner is None else joiner
    windows = token_windows(tokenizer, load_texts(dataset, split, data_dir), joiner, seqlen, max_windows)
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
        "bos_added": bool(tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else False,
    }
    return ppl, protocol
