"""Typed schema of the shared configuration keys, registered in Hydra's ConfigStore.

Typos and wrong types in shared keys (`prune.ratoi=0.2`, `prune.ratio=abc`) fail at
compose time. Method and schedule blocks stay open: each method has its own knobs,
checked by its class's constructor.
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
    assemble: bool = False  # the package ships GGUF chunks and an assemble() that joins them
    tokenizer: Optional[str] = None  # random models borrow the tokenizer of this model
    random_config: Optional[dict[str, Any]] = None
    cache_dir: Optional[str] = None
    trust_remote_code: bool = False
    params_b: Optional[float] = None  # nominal size, for tables


@dataclass
class PruneConfig:
    ratio: float = 0.2
    attn_unit: str = "kv_group"  # kv_group | q_head
    rounding: str = "round"  # round | floor
    absorb_rounding: bool = True


@dataclass
class CalibConfig:
    dataset: str = "c4"
    split: Optional[str] = None
    n_samples: int = 128
    seqlen: int = 128
    sampling: str = "document"  # document | stream
    seed: int = 0
    batch_size: int = 8


@dataclass
class DataConfig:
    dir: Optional[str] = None


@dataclass
class PerplexityConfig:
    datasets: list[str] = field(default_factory=lambda: ["wikitext2", "ptb"])
    seqlen: int = 128
    max_windows: Optional[int] = None
    batch_size: int = 8
    bos: str = "stream"  # stream (the papers') | per_window (BOS before every window: Gemma-3)


@dataclass
class LayerErrorConfig:
    """Per-layer FFN output error vs the dense model (SlimGPT Figure 2)."""

    enabled: bool = False
    dataset: str = "wikitext2"
    windows: int = 8


@dataclass
class ZeroshotConfig:
    """lm-eval-harness tasks (0-shot); `limit` caps the documents per task."""

    tasks: list[str] = field(default_factory=list)
    limit: Optional[int] = None
    batch_size: int = 8


@dataclass
class LatencyConfig:
    """SlimLLM Table 3: prefill of 256 tokens, decoding 256 tokens at batch 8, median."""

    enabled: bool = False
    prefill_tokens: int = 256
    prefill_batch: int = 1
    decode_tokens: int = 256
    decode_batch: int = 8
    decode_prompt_tokens: int = 1
    repeats: int = 5
    warmup: int = 1
    # Time the dense model beside the pruned one, interleaved, and record the ratios:
    # seconds from two runs hours apart on a shared machine do not compare.
    dense_reference: bool = True


@dataclass
class EvalConfig:
    ppl: PerplexityConfig = field(default_factory=PerplexityConfig)
    layer_error: LayerErrorConfig = field(default_factory=LayerErrorConfig)
    zeroshot: ZeroshotConfig = field(default_factory=ZeroshotConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class LoggerConfig:
    mode: str = "disabled"  # disabled | offline | online
    project: str = "slimexp"
    entity: Optional[str] = None
    dir: Optional[str] = None
    init_timeout: float = 30.0  # s an online wandb.init may wait for the server before falling back to offline


@dataclass
class ScaleConfig:
    name: str = "paper"
    # Paper models replaced by what runs on a small CPU box; the record names both.
    model_substitutes: dict[str, str] = field(default_factory=dict)
    calib_max_samples: Optional[int] = None
    calib_max_seqlen: Optional[int] = None
    # Tokens a local calibration slice holds as one stream: `stream` sampling there is
    # capped at tokens // seqlen windows instead of failing (applies with data.dir only).
    calib_data_tokens: dict[str, int] = field(default_factory=dict)
    ppl_max_windows: Optional[int] = None
    zeroshot_limit: Optional[int] = None
    finetune_max_steps: Optional[int] = None
    latency_max_repeats: Optional[int] = None


@dataclass
class ResultsConfig:
    dir: str = "results"
    save_model: bool = False
    model_dir: Optional[str] = None


@dataclass
class RunnerConfig:
    skip_done: bool = True


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
    finetune: Any = None
    recipe: Optional[str] = None  # set by conf/recipe/<method>/<name>.yaml
    variant: Optional[str] = None  # ablation row label set by conf/variant/<method>/<name>.yaml
    report: Any = None
    experiment_name: str = "default"
    tags: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"


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
