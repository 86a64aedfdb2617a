"""LoRA recovery of a pruned model with peft, merged back before evaluation.

Alpaca-cleaned in the alpaca-lora / LLM-Pruner prompt template, the loss on the response
tokens only (`train_on_inputs: false`), each example cut at `cutoff_len` tokens with an
EOS appended when it fits. Trained by transformers' `Trainer` with `DataCollatorForSeq2Seq`,
as the authors' scripts do: AdamW, `warmup_steps` of linear warm-up then linear decay,
gradient accumulation from `micro_batch_size` to `batch_size`. The adapters cover every
projection of the decoder that still has inputs and outputs (a layer FLAP emptied keeps a
0-wide o_proj or down_proj, which gets none). After training the adapters are merged, so
the model is again plain `nn.Linear` layers that `save_pruned` and `load_pruned` handle.
"""

from __future__ import annotations

import logging
import math
import tempfile
from typing import Any

import torch
from torch import nn

from slimexp.data.sources import load_rows
from slimexp.errors import SlimexpError

log = logging.getLogger(__name__)

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def alpaca_prompt(row: dict) -> str:
    if row.get("input"):
        return PROMPT_WITH_INPUT.format(instruction=row["instruction"], input=row["input"])
    return PROMPT_NO_INPUT.format(instruction=row["instruction"])


def tokenize_example(tokenizer, row: dict, cutoff_len: int, train_on_inputs: bool) -> dict[str, list[int]]:
    """input_ids and labels (-100 on the prompt unless train_on_inputs) of one example."""
    prompt = alpaca_prompt(row)
    ids = tokenizer(prompt + row["output"], truncation=True, max_length=cutoff_len)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and len(ids) < cutoff_len and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    labels = list(ids)
    if not train_on_inputs:
        n_prompt = len(tokenizer(prompt, truncation=True, max_length=cutoff_len)["input_ids"])
        labels[:n_prompt] = [-100] * min(n_prompt, len(labels))
    return {"input_ids": ids, "labels": labels}


# The two Linears of a low-rank projection (pruning/lowrank.py, LoRAP's attention).
LOW_RANK_FACTORS = ("proj_in", "proj_out")


def _role(name: str) -> str:
    """The projection a Linear belongs to: its own name, or its low-rank parent's."""
    parts = name.split(".")
    if len(parts) > 1 and parts[-1] in LOW_RANK_FACTORS:
        return parts[-2]
    return parts[-1]


def lora_targets(model: nn.Module, roles: list[str]) -> list[str]:
    """Full names of the decoder projections to adapt: those named in `roles` that still
    have inputs and outputs. A low-rank projection is adapted in both of its factor
    Linears (and merged into them), so it stays low-rank after the merge."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and _role(name) in roles
        and module.in_features > 0
        and module.out_features > 0
        and ".layers." in f".{name}"
    ]


def loss_curve(on_step=None):
    """A Trainer callback keeping the loss of every optimiser step (the mean over its
    micro-batches), passing it to `on_step(step, loss)` (W&B's train/loss), with a progress
    bar in place of the Trainer's printed log lines."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class LossCurve(TrainerCallback):
        def __init__(self):
            self.losses: list[float] = []
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc="lora", leave=False)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}")
                if on_step is not None:
                    on_step(state.global_step - 1, self.losses[-1])

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return LossCurve()


def training_examples(tokenizer, cfg: dict[str, Any], data_dir: str | None) -> list[dict[str, list[int]]]:
    rows = load_rows(cfg["dataset"], cfg.get("split"), data_dir)
    if cfg.get("max_examples"):
        rows = rows[: cfg["max_examples"]]
    examples = [tokenize_example(tokenizer, r, cfg["cutoff_len"], cfg["train_on_inputs"]) for r in rows]
    examples = [e for e in examples if any(label != -100 for label in e["labels"])]
    if not examples:
        raise SlimexpError(
            f"finetune: no {cfg['dataset']} example has response tokens within cutoff_len {cfg['cutoff_len']}"
        )
    return examples


def training_arguments(cfg: dict[str, Any], output_dir: str, device, seed: int):
    """The recipe as transformers' Trainer runs it (the authors' scripts use Trainer too):
    micro-batches accumulated to `batch_size`, AdamW, `warmup_steps` of linear warm-up,
    then linear decay, gradients clipped at 1; `max_steps` (scale=cpu) ends it early."""
    from transformers import TrainingArguments

    if cfg["batch_size"] % cfg["micro_batch_size"]:
        raise SlimexpError(
            f"finetune.batch_size {cfg['batch_size']} must be a multiple of micro_batch_size {cfg['micro_batch_size']}"
        )
    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=cfg["micro_batch_size"],
        gradient_accumulation_steps=cfg["batch_size"] // cfg["micro_batch_size"], num_train_epochs=cfg["epochs"],
        max_steps=cfg.get("max_steps") or -1, learning_rate=cfg["lr"], warmup_steps=cfg["warmup_steps"],
        lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", logging_steps=1,
        save_strategy="no", eval_strategy="no", report_to=[], seed=seed, data_seed=seed,
        use_cpu=torch.device(device).type == "cpu", remove_unused_columns=False, disable_tqdm=True,
    )  # fmt: skip


def finetune_lora(
    model, tokenizer, cfg: dict[str, Any], data_dir: str | None, device, seed: int, on_step=None
) -> tuple[nn.Module, dict[str, Any]]:
    """Train LoRA adapters with transformers' Trainer, merge them; returns (merged model,
    training facts for the record)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise SlimexpError("finetune=lora needs peft: pip install -e '.[eval]'") from err
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer

    examples = training_examples(tokenizer, cfg, data_dir)
    targets = lora_targets(model, list(cfg["target_modules"]))
    lora = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"], target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")  # fmt: skip
    torch.manual_seed(seed)
    peft_model = get_peft_model(model.to(device), lora)
    curve = loss_curve(on_step)
    with tempfile.TemporaryDirectory(prefix="slimexp-lora-") as output_dir:
        args = training_arguments(cfg, output_dir, device, seed)
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=8, return_tensors="pt")
        trainer = Trainer(model=peft_model, args=args, train_dataset=examples, data_collator=collator,
                          callbacks=[curve])  # fmt: skip
        trainer.remove_callback(PrinterCallback)  # the loss goes to the record and W&B, not stdout
        trainer.train()
    peft_model.eval()
    steps_per_epoch = math.ceil(len(examples) / cfg["batch_size"])
    facts = {
        "name": cfg["name"], "dataset": cfg["dataset"], "examples": len(examples),
        "steps": trainer.state.global_step, "steps_full": steps_per_epoch * cfg["epochs"], "epochs": cfg["epochs"],
        "batch_size": cfg["batch_size"], "micro_batch_size": cfg["micro_batch_size"],
        "warmup_steps": cfg["warmup_steps"], "trainer": "transformers.Trainer",
        "trainable_params": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        "adapted_modules": len(targets), "loss": curve.losses,
    }  # fmt: skip
    return peft_model.merge_and_unload(), facts
