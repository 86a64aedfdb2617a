"""LoRA recovery of a pruned model with peft, merged back before evaluation.

Alpaca-cleaned in the alpaca-lora / LLM-Pruner prompt template, the loss on the response
tokens only (`train_on_inputs: false`), each example cut at `cutoff_len` tokens with an
EOS appended when it fits. AdamW, linear warm-up then linear decay, gradient
accumulation from `micro_batch_size` to `batch_size`. The adapters cover every
projection of the decoder that still has inputs and outputs (a layer FLAP emptied keeps a
0-wide o_proj or down_proj, which gets none). After training the adapters are merged, so
the model is again plain `nn.Linear` layers that `save_pruned` and `load_pruned` handle.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

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


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lora_targets(model: nn.Module, roles: list[str]) -> list[str]:
    """Full names of the decoder projections to adapt: those named in `roles` that still
    have inputs and outputs."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.rsplit(".", 1)[-1] in roles
        and module.in_features > 0
        and module.out_features > 0
        and ".layers." in f".{name}"
    ]


def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def finetune_lora(
    model, tokenizer, cfg: dict[str, Any], data_dir: str | None, device, seed: int, on_step=None
) -> tuple[nn.Module, dict[str, Any]]:
    """Train LoRA adapters, merge them; returns (merged model, training facts for the record)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise SlimexpError("finetune=lora needs peft: pip install -e '.[eval]'") from err
    if cfg["batch_size"] % cfg["micro_batch_size"]:
        raise SlimexpError(
            f"finetune.batch_size {cfg['batch_size']} must be a multiple of micro_batch_size {cfg['micro_batch_size']}"
        )
    rows = load_rows(cfg["dataset"], cfg.get("split"), data_dir)
    if cfg.get("max_examples"):
        rows = rows[: cfg["max_examples"]]
    rng = random.Random(seed)
    examples = [tokenize_example(tokenizer, r, cfg["cutoff_len"], cfg["train_on_inputs"]) for r in rows]
    examples = [e for e in examples if any(label != -100 for label in e["labels"])]
    if not examples:
        raise SlimexpError(
            f"finetune: no {cfg['dataset']} example has response tokens within cutoff_len {cfg['cutoff_len']}"
        )
    accumulation = cfg["batch_size"] // cfg["micro_batch_size"]
    steps_per_epoch = math.ceil(len(examples) / cfg["batch_size"])
    total = steps_per_epoch * cfg["epochs"]
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    warmup = min(cfg["warmup_steps"], max(1, total // 10))
    targets = lora_targets(model, list(cfg["target_modules"]))
    lora = LoraConfig(
        r=cfg["r"],
        lora_alpha=cfg["alpha"],
        lora_dropout=cfg["dropout"],
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    model.to(device)
    peft_model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=cfg["lr"], weight_decay=0.0
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    losses: list[float] = []
    peft_model.train()
    order: list[int] = []
    progress = tqdm(range(total), desc="lora", leave=False)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, warmup, cfg["lr"])
        step_loss = 0.0
        for _ in range(accumulation):
            if len(order) < cfg["micro_batch_size"]:
                epoch_order = list(range(len(examples)))
                rng.shuffle(epoch_order)
                order += epoch_order
            batch = collate([examples[i] for i in order[: cfg["micro_batch_size"]]], pad_id)
            del order[: cfg["micro_batch_size"]]
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = peft_model(**batch, use_cache=False).loss / accumulation
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        progress.set_postfix(loss=f"{step_loss:.3f}")
        if on_step is not None:
            on_step(step, step_loss)
    peft_model.eval()
    merged = peft_model.merge_and_unload()
    facts = {
        "name": cfg["name"],
        "dataset": cfg["dataset"],
        "examples": len(examples),
        "steps": total,
        "steps_full": steps_per_epoch * cfg["epochs"],
        "epochs": cfg["epochs"],
        "batch_size": cfg["batch_size"],
        "micro_batch_size": cfg["micro_batch_size"],
        "warmup_steps": warmup,
        "trainable_params": trainable,
        "adapted_modules": len(targets),
        "loss": losses,
    }
    return merged, facts
