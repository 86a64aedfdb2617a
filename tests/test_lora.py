"""LoRA recovery: the Alpaca template and masking, and a merged model that saves and reloads."""

import pytest
import torch
from torch import nn

pytest.importorskip("peft")

from transformers import DataCollatorForSeq2Seq  # noqa: E402

from slimexp.finetune.lora import (  # noqa: E402
    PROMPT_NO_INPUT,
    alpaca_prompt,
    finetune_lora,
    lora_targets,
    tokenize_example,
    training_arguments,
)
from slimexp.models.adapters import adapter_for  # noqa: E402
from slimexp.pruning import surgery  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from slimexp.models.loader import load_model, model_config_by_name

    return load_model(model_config_by_name("tiny-llama-gqa"))[1]


def _cfg(**overrides):
    cfg = dict(
        name="lora_test",
        dataset="alpaca_cleaned",
        split=None,
        max_examples=24,
        r=4,
        alpha=16,
        dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        epochs=1,
        lr=1e-2,
        batch_size=4,
        micro_batch_size=2,
        cutoff_len=64,
        warmup_steps=1,
        train_on_inputs=False,
        max_steps=6,
    )
    cfg.update(overrides)
    return cfg


def test_prompt_template_and_response_only_labels(tokenizer):
    row = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
    assert alpaca_prompt(row) == PROMPT_NO_INPUT.format(instruction="Name a colour.")
    assert "### Input:\nctx" in alpaca_prompt({**row, "input": "ctx"})
    example = tokenize_example(tokenizer, row, 256, train_on_inputs=False)
    n_prompt = len(tokenizer(alpaca_prompt(row))["input_ids"])
    assert example["labels"][:n_prompt] == [-100] * n_prompt
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example["input_ids"][n_prompt:-1]) == "Blue."
    assert tokenize_example(tokenizer, row, 256, train_on_inputs=True)["labels"] == example["input_ids"]
    assert len(tokenize_example(tokenizer, row, 10, train_on_inputs=False)["input_ids"]) == 10


def test_the_trainer_runs_the_recipe_as_written(tmp_path):
    """Warm-up steps are the recipe's (the old loop cut lora_slimgpt's 100 to 80), micro-batches
    accumulate to the batch size, AdamW with linear decay, max_steps only where a scale caps it."""
    from slimexp.errors import SlimexpError

    args = training_arguments(
        _cfg(warmup_steps=100, batch_size=64, micro_batch_size=4, max_steps=None), tmp_path, "cpu", 0
    )
    assert (args.warmup_steps, args.gradient_accumulation_steps, args.per_device_train_batch_size) == (100, 16, 4)
    assert (args.max_steps, args.lr_scheduler_type, args.optim, args.max_grad_norm) == (
        -1,
        "linear",
        "adamw_torch",
        1.0,
    )
    assert args.save_strategy == "no" and args.report_to == [] and args.seed == args.data_seed == 0
    assert training_arguments(_cfg(max_steps=5), tmp_path, "cpu", 0).max_steps == 5
    with pytest.raises(SlimexpError, match="multiple of micro_batch_size"):
        training_arguments(_cfg(batch_size=6, micro_batch_size=4), tmp_path, "cpu", 0)


def test_emptied_modules_get_no_adapter(tiny):
    model = tiny("gqa")
    adapter = adapter_for(model)
    layer = adapter.layers(model)[1]
    surgery.remove_heads(layer, adapter, list(range(6)), list(range(2)))
    targets = lora_targets(model, ["q_proj", "o_proj", "down_proj"])
    assert not any(".layers.1.self_attn" in t for t in targets)
    assert sum(".layers.0." in t for t in targets) == 3


def test_lora_lowers_the_training_loss_and_merges_into_plain_linears(tiny, tokenizer, data_dir, tmp_path):
    import slimexp
    from slimexp.models.checkpoint import save_pruned

    model = tiny("gqa")
    model.config.vocab_size = model.get_input_embeddings().num_embeddings
    vocab = model.get_input_embeddings().num_embeddings
    # tiny() has a 64-token vocabulary: map the tokenizer's ids into it.
    tok = _ModuloTokenizer(tokenizer, vocab)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    from slimexp.data.sources import load_rows

    held = DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt")(
        [tokenize_example(tok, r, 64, False) for r in load_rows("alpaca_cleaned", None, data_dir)[:8]]
    )
    with torch.no_grad():
        loss_before = model(**held).loss.item()
    merged, facts = finetune_lora(model, tok, _cfg(epochs=3, max_steps=12, lr=5e-3), data_dir, "cpu", seed=0)
    assert facts["steps"] == 12 and len(facts["loss"]) == 12 and facts["trainable_params"] > 0
    with torch.no_grad():
        assert merged(**held).loss.item() < loss_before - 0.05
    assert not any("lora" in n for n, _ in merged.named_modules())
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if n.endswith("proj"))
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p, before[n])]
    assert any("q_proj" in n for n in changed) and not any("embed" in n for n in changed)
    ids = torch.tensor([[1, 2, 3, 4]])
    save_pruned(merged, tmp_path / "m", tokenizer)
    reloaded = slimexp.load_pruned(tmp_path / "m")
    with torch.no_grad():
        assert (reloaded(ids).logits - merged(ids).logits).abs().max() < 1e-5


class _ModuloTokenizer:
    """A real tokenizer whose ids are folded into a tiny model's vocabulary."""

    def __init__(self, tokenizer, vocab):
        self.tokenizer, self.vocab = tokenizer, vocab
        self.eos_token_id = tokenizer.eos_token_id % vocab
        self.pad_token_id = 0

    def __call__(self, text, **kwargs):
        out = self.tokenizer(text, **kwargs)
        return {"input_ids": [i % self.vocab for i in out["input_ids"]]}

    def __getattr__(self, name):  # padding (side, token, pad()) as the real tokenizer does it
        return getattr(self.tokenizer, name)


def test_pipeline_records_the_finetune_and_its_loss_curve(tmp_path):
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(
        config_for(
            tmp_path,
            "method=magnitude",
            "prune.ratio=0.5",
            "finetune=lora_slimllm",
            "finetune.max_steps=2",
            "finetune.batch_size=2",
            "finetune.micro_batch_size=1",
            "finetune.max_examples=8",
            "finetune.cutoff_len=96",
        )
    )
    assert record["finetune"] == "lora_slimllm"
    assert record["config"]["finetune"]["r"] == 4
    assert len(record["training"]["loss"]) == 2 and record["training"]["examples"] <= 8
    assert record["metrics"]["time/finetune_s"] > 0 and record["metrics"]["ppl/wikitext2"] > 1
