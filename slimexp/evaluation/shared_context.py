"""lm-eval's log-likelihood requests, scored with each context computed once.

A multiple-choice document sends one (context, continuation) request per choice, and
lm-eval's HFLM runs the full context again for every choice, then projects every position
onto the vocabulary. Here the requests that share a context are packed into one row: the
context once, then each choice's continuation, with an attention mask under which a
continuation token sees the context and its own continuation only, and position ids that
restart after the context for every choice. So each token is computed exactly as in
lm-eval's own row (same tokens before it, same positions), only once; and the vocabulary
projection runs on the continuation positions alone.

The scores are lm-eval's up to float rounding (kernels see other shapes): on SmolLM2 the
log-likelihoods agree to about 1e-6 and every document's acc/acc_norm is the same
(tests/test_zeroshot.py, bench/zeroshot_speed.py). Requests this packing cannot reproduce
exactly fall back to lm-eval's own path: longer than the model's window or than a sliding
attention window, or an attention kernel that ignores a custom mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

CUSTOM_MASK_ATTENTION = ("sdpa", "eager")


@dataclass
class PackedRow:
    """One context and the continuations of every request that shares it."""

    prefix: list[int]  # the context without its last token
    requests: list[int] = field(default_factory=list)  # indices into the request list
    suffixes: list[list[int]] = field(default_factory=list)  # last context token + continuation[:-1]
    targets: list[list[int]] = field(default_factory=list)  # the continuation

    def __len__(self) -> int:
        return len(self.prefix) + sum(len(s) for s in self.suffixes)

    def tokens(self) -> list[int]:
        return self.prefix + [t for suffix in self.suffixes for t in suffix]

    def positions(self) -> list[int]:
        start = len(self.prefix)
        return list(range(start)) + [start + i for suffix in self.suffixes for i in range(len(suffix))]

    def segments(self) -> list[int]:
        """0 for the shared context, i + 1 for the i-th continuation."""
        return [0] * len(self.prefix) + [i + 1 for i, suffix in enumerate(self.suffixes) for _ in suffix]


def packed_rows(requests: list[tuple], indices: list[int]) -> list[PackedRow]:
    """The requests at `indices`, one row per distinct context, longest row first."""
    rows: dict[tuple[int, ...], PackedRow] = {}
    for index in indices:
        _, context, continuation = requests[index]
        row = rows.setdefault(tuple(context), PackedRow(prefix=list(context[:-1])))
        row.requests.append(index)
        row.suffixes.append([context[-1], *continuation[:-1]])
        row.targets.append(list(continuation))
    return sorted(rows.values(), key=len, reverse=True)


def attention_bias(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, L, L) additive mask from segment ids (-1: padding): causal, and a
    continuation sees the context (segment 0) and its own segment only."""
    query, key = segments[:, :, None], segments[:, None, :]
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)  # padding sees itself: no empty row
    bias = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[:, None]


def batch_tensors(rows: list[PackedRow], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input ids, position ids, segment ids, continuation-position mask)."""
    length = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    segments = torch.full((len(rows), length), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        ids[i, :n] = torch.tensor(row.tokens())
        positions[i, :n] = torch.tensor(row.positions())
        segments[i, :n] = torch.tensor(row.segments())
    keep = segments > 0
    return ids.to(device), positions.to(device), segments.to(device), keep.to(device)


class SharedContextLM(HFLM):
    """HFLM whose log-likelihood computes a context once for all its continuations."""

    def _packable(self, context: list[int], continuation: list[int]) -> bool:
        window = getattr(self.model.config, "sliding_window", None) or self.max_length
        return len(context) + len(continuation) <= min(self.max_length, window)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        attention = getattr(self.model.config, "_attn_implementation", None)
        if self.backend != "causal" or attention not in CUSTOM_MASK_ATTENTION:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        fallback = [i for i, (_, ctx, cont) in enumerate(requests) if not self._packable(ctx, cont)]
        if fallback:
            for i, answer in zip(
                fallback, super()._loglikelihood_tokens([requests[i] for i in fallback], disable_tqdm)
            ):
                results[i] = answer
        rows = packed_rows(requests, [i for i in range(len(requests)) if results[i] is None])
        batch_size = int(self.batch_size) if str(self.batch_size).isdigit() else 1
        with tqdm(total=len(requests), disable=disable_tqdm, desc="Scoring shared-context rows") as bar:
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                for index, answer in zip(
                    (i for row in batch for i in row.requests), self._score_rows(batch), strict=True
                ):
                    results[index] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
                    bar.update(1)
        return results

    @torch.no_grad()
    def _score_rows(self, rows: list[PackedRow]) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, continuation is greedy) per request, in row order."""
        ids, positions, segments, keep = batch_tensors(rows, self.device)
        dtype = next(self.model.parameters()).dtype
        logits = self.model(
            input_ids=ids,
            attention_mask=attention_bias(segments, dtype),
            position_ids=positions,
            logits_to_keep=keep,
            use_cache=False,
        ).logits  # (kept positions, vocab), in row-major order: row by row, suffix by suffix
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        targets = torch.tensor([t for row in rows for target in row.targets for t in target], device=logits.device)
        token_logprobs = logprobs.gather(1, targets[:, None]).squeeze(1)
        greedy = logprobs.argmax(dim=-1) == targets
        answers, offset = [], 0
        for row in rows:
            for target in row.targets:
                span = slice(offset, offset + len(target))
                answers.append((float(token_logprobs[span].sum()), bool(greedy[span].all())))
                offset += len(target)
        return answers
