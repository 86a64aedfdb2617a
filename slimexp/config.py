"""Typed schema of the shared configuration keys, registered in Hydra's ConfigStore.

Types only: every value lives in the YAML (`conf/config.yaml` holds each default once, the
group files only what they change), so there is one home for each default. `MISSING`
marks a key a YAML must set; `Optional[...] = None` a key that may stay unset. Typos and
wrong types in shared keys (`prune.ratoi=0.2`, `prune.ratio=abc`) fail at compose time.
Method and schedule blocks stay open: each method's knobs are checked by its dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class ModelConfig:
    name: str = MISSING
    source: str = MISSING  # hub | gguf_package | random
    hf_id: Optional[str] = None
    revision: Optional[str] = None
    package: Optional[str] = None
    gguf_file: Optional[str] = None
    assemble: bool = MISSING  # the package ships GGUF chunks and an assemble() that joins them
    tokenizer: Optional[str] = None  # random models borrow the tokenizer of this model
    random_config: Optional[dict[str, Any]] = None
    cache_dir: Optional[str] = None
    trust_remote_code: bool = MISSING
    params_b: Optional[float] = None  # nominal size, for tables
    # A hub model's shape (transformers config keys), for the planner when its config.json
    # is not local; not hashed (the weights define it).
    geometry: Optional[dict[str, Any]] = None


@dataclass
class PruneConfig:
    ratio: float = MISSING
    attn_unit: str = MISSING  # kv_group | q_head
    rounding: str = MISSING  # round | floor
    absorb_rounding: bool = MISSING


@dataclass
class CalibConfig:
    dataset: str = MISSING
    split: Optional[str] = None
    n_samples: int = MISSING
    seqlen: int = MISSING
    sampling: str = MISSING  # document | stream
    seed: int = MISSING
    batch_size: int = MISSING


@dataclass
class DataConfig:
    dir: Optional[str] = None


@dataclass
class PerplexityConfig:
    datasets: list[str] = MISSING
    seqlen: int = MISSING
    max_windows: Optional[int] = None
    batch_size: int = MISSING
    bos: str = MISSING  # stream (the papers') | per_window (BOS before every window: Gemma-3)


@dataclass
class LayerErrorConfig:
    """Per-layer FFN output error vs the dense model (SlimGPT Figure 2)."""

    enabled: bool = MISSING
    dataset: str = MISSING
    windows: int = MISSING


@dataclass
class ZeroshotConfig:
    """lm-eval-harness tasks (0-shot); `limit` caps the documents per task."""

    tasks: list[str] = MISSING
    limit: Optional[int] = None
    batch_size: int = MISSING
    scoring: str = MISSING


@dataclass
class LatencyConfig:
    """SlimLLM Table 3: prefill of 256 tokens, decoding 256 tokens at batch 8, median."""

    enabled: bool = MISSING
    prefill_tokens: int = MISSING
    prefill_batch: int = MISSING
    decode_tokens: int = MISSING
    decode_batch: int = MISSING
    decode_prompt_tokens: int = MISSING
    repeats: int = MISSING
    warmup: int = MISSING
    # Time the dense model beside the pruned one, interleaved, and record the ratios:
    # seconds from two runs hours apart on a shared machine do not compare.
    dense_reference: bool = MISSING


@dataclass
class EvalConfig:
    ppl: PerplexityConfig = field(default_factory=PerplexityConfig)
    layer_error: LayerErrorConfig = field(default_factory=LayerErrorConfig)
    zeroshot: ZeroshotConfig = field(default_factory=ZeroshotConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class LoggerConfig:
    mode: str = MISSING  # disabled | offline | online
    project: str = MISSING
    entity: Optional[str] = None
    dir: Optional[str] = None
    init_timeout: float = MISSING  # s an online wandb.init may wait for the server before falling back to offline


@dataclass
class ScaleConfig:
    name: str = MISSING
    dtype: str = MISSING  # what dtype=auto resolves to
    # Paper models replaced by what runs on a small CPU box; the record names both.
    model_substitutes: dict[str, str] = MISSING
    calib_max_samples: Optional[int] = None
    calib_max_seqlen: Optional[int] = None
    # Tokens a local calibration slice holds as one stream: `stream` sampling there is
    # capped at tokens // seqlen windows instead of failing (applies with data.dir only).
    calib_data_tokens: dict[str, int] = MISSING
    ppl_max_windows: Optional[int] = None
    zeroshot_limit: Optional[int] = None
    finetune_max_steps: Optional[int] = None
    # Methods that train while pruning (LoRAPrune): optimiser steps and sequences per step.
    prune_train_max_steps: Optional[int] = None
    prune_train_max_batch: Optional[int] = None
    latency_max_repeats: Optional[int] = None


@dataclass
class ResultsConfig:
    dir: str = MISSING
    save_model: bool = MISSING
    model_dir: Optional[str] = None


@dataclass
class RunnerConfig:
    skip_done: bool = MISSING


@dataclass
class PlanConfig:
    """The resource planner (slimexp/planner.py): what every run checks before loading.
    Not hashed: it decides whether a run starts, not what it computes."""

    enforce: bool = MISSING  # stop a run whose plan exceeds the device's or the host's memory
    gpu: Optional[str] = None  # plan for a named GPU that is not here (planner.GPUS)
    tflops: Optional[float] = None  # the matmul throughput to assume instead of measuring it
    device_memory_gb: Optional[float] = None
    host_memory_gb: Optional[float] = None


@dataclass
class SlimexpConfig:
    model: ModelConfig = MISSING
    method: Any = MISSING
    schedule: Any = MISSING
    calib: CalibConfig = field(default_factory=CalibConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    finetune: Any = MISSING
    recipe: Optional[str] = None  # set by conf/recipe/<method>/<name>.yaml
    variant: Optional[str] = None  # ablation row label set by conf/variant/<method>/<name>.yaml
    report: Any = MISSING
    experiment_name: str = MISSING
    tags: list[str] = MISSING
    seed: int = MISSING
    device: str = MISSING
    dtype: str = MISSING


def by_ratio(ratio: float, table: dict) -> Any:
    """`${slimexp.by_ratio:${prune.ratio},{0.2: 10.0, 0.5: 7.0}}`: a published setting that
    the authors paired with each ratio (SlimLLM's α); a ratio they did not publish is an error."""
    for published, value in table.items():
        if abs(float(published) - float(ratio)) < 1e-9:
            return value
    raise ValueError(f"no published setting for prune.ratio={ratio}; the recipe lists {sorted(table)}")


def register_configs() -> None:
    ConfigStore.instance().store(name="slimexp_schema", node=SlimexpConfig)
    if not OmegaConf.has_resolver("slimexp.by_ratio"):
        OmegaConf.register_new_resolver("slimexp.by_ratio", by_ratio)
