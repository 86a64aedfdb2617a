"""A LLaMA-1/2 style tokenizer folder (only `tokenizer.model`, SentencePiece) loads through
slimexp's loader: the `sentencepiece` and `protobuf` dependencies are there and used."""

import json

from slimexp.models.loader import load_tokenizer


def test_a_sentencepiece_only_tokenizer_folder_loads(tmp_path):
    import sentencepiece

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog number {i}" for i in range(200)))
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(tmp_path / "tokenizer"), vocab_size=60, model_type="bpe", minloglevel=2
    )
    folder = tmp_path / "llama-like"
    folder.mkdir()
    (tmp_path / "tokenizer.model").rename(folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tokenizer = load_tokenizer({"name": "llama-like", "source": "hub", "hf_id": str(folder)})
    ids = tokenizer("the lazy fox")["input_ids"]
    assert len(ids) >= 3 and tokenizer.decode(ids, skip_special_tokens=True).strip() == "the lazy fox"
