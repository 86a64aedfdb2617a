"""Shared-context scoring gives lm-eval's own log-likelihoods, request for request."""

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.models.huggingface import HFLM  # noqa: E402

from slimexp.evaluation.shared_context import SharedContextLM, attention_bias, packed_rows  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from slimexp.models.loader import load_model, model_config_by_name

    return load_model(model_config_by_name("tiny-llama-gqa"))[1]


def _requests(vocab: int, seed: int = 0) -> list[tuple]:
    """Multiple-choice documents (one context, 2-4 continuations of 1-5 tokens), one context
    asked twice with the same continuation, and requests that share nothing."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(n):
        return torch.randint(1, vocab, (n,), generator=generator).tolist()

    requests = []
    for context_length, choices in ((9, 4), (1, 2), (17, 3), (5, 2)):
        context = tokens(context_length)
        for k in range(choices):
            requests.append((("ctx", f"choice {k}"), context, tokens(1 + (k * 2) % 5)))
    requests.append((("dup", "a"), requests[0][1], requests[0][2]))
    requests += [(("alone", str(i)), tokens(3 + i), tokens(2)) for i in range(3)]
    return requests


def test_attention_bias_is_causal_and_keeps_choices_apart():
    segments = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, -1, -1], [0, 1, 2, 3, -1, -1, -1, -1, -1, -1]])
    bias = attention_bias(segments, torch.float32)
    assert bias.shape == (2, 1, 10, 10)
    for b in range(2):
        for q in range(10):
            for k in range(10):
                sq, sk = segments[b, q].item(), segments[b, k].item()
                allowed = q == k or (k < q and sk >= 0 and sq >= 0 and (sk == 0 or sk == sq))
                assert (bias[b, 0, q, k] == 0).item() == allowed, (b, q, k)


def test_rows_pack_one_context_per_row_with_restarting_positions():
    requests = [
        (None, [5, 6, 7], [1, 2]),
        (None, [9], [3]),
        (None, [5, 6, 7], [4]),
    ]
    rows = packed_rows(requests, [0, 1, 2])
    assert [row.requests for row in rows] == [[0, 2], [1]]
    assert rows[0].tokens() == [5, 6, 7, 1, 7]
    assert rows[0].positions() == [0, 1, 2, 3, 2]
    assert rows[0].segments() == [0, 0, 1, 1, 2]
    assert rows[0].targets == [[1, 2], [4]]
    assert rows[1].tokens() == [9] and rows[1].positions() == [0]


@pytest.mark.parametrize("kind", ["gqa", "qwen2", "gemma3"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_scores_equal_lm_evals_own(kind, batch_size, tiny, tokenizer):
    """Every request's log-likelihood within float rounding of HFLM's and the same greedy
    flag; a request longer than the model's window (and, on gemma3, than its sliding window)
    goes through HFLM itself."""
    model = tiny("gemma3" if kind == "gemma3" else "gqa", bias=kind == "qwen2")
    model.config._attn_implementation = "sdpa"
    requests = _requests(model.config.vocab_size)
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    shared = SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    expected = reference._loglikelihood_tokens(requests, disable_tqdm=True)
    got = shared._loglikelihood_tokens(requests, disable_tqdm=True)
    assert len(got) == len(expected) == len(requests)
    for (value, greedy), (ref_value, ref_greedy) in zip(got, expected):
        assert value == pytest.approx(ref_value, rel=1e-5, abs=1e-5)
        assert greedy == ref_greedy
    assert len({round(v, 3) for v, _ in got}) > len(requests) // 2  # not a constant answer


def test_requests_over_the_window_fall_back_to_lm_eval(tiny, tokenizer, monkeypatch):
    model = tiny("gqa")
    model.config._attn_implementation = "sdpa"
    shared = SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=2, device="cpu")
    monkeypatch.setattr(SharedContextLM, "max_length", property(lambda self: 12))
    requests = _requests(model.config.vocab_size)
    seen = []
    original = HFLM._loglikelihood_tokens

    def spy(self, reqs, disable_tqdm=False, override_bs=None):
        seen.extend(len(c) + len(t) for _, c, t in reqs)
        return original(self, reqs, disable_tqdm, override_bs)

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", spy)
    got = shared._loglikelihood_tokens(requests, disable_tqdm=True)
    assert seen and all(n > 12 for n in seen)
    assert len(seen) == sum(len(c) + len(t) > 12 for _, c, t in requests)
    assert all(value < 0 for value, _ in got)
