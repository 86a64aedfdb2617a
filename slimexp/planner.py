"""Resource planner: what a run will need, per phase, from its config alone (no weights).

`plan_run(config)` reads the resolved run config and the model's geometry (its
transformers config: the local folder's, the hub cache's, or the `geometry:` block of a
hub model's YAML, so paper models plan offline) and returns a `ResourcePlan`: for each
phase (load, calib, prune, finetune, ppl, zeroshot, latency, save) the peak accelerator
memory, the peak host memory (the process's resident set), the disk it writes and an
estimated time. `slimexp-plan <overrides>` prints it; every run consults it before loading
(`check_plan`, from `checks.preflight`) and stops, in one line naming the phase and the
knob that fixes it, when a phase needs more than the device or the host has.

What is modelled (first principles): parameters from the geometry (embeddings, lm_head
unless tied, q/k/v/o and gate/up/down, biases) × the dtype's bytes; the pruned model as
the dense decoder × (1 − ratio); the layer-wise engine's state: one decoder layer and the
embeddings on the device, the calibration activations n_samples × seqlen × hidden twice
(a layer's inputs and its outputs while they are computed), one calibration batch's
workspace; each method's statistics (SlimGPT: the Hessian of down_proj's input, d_ff ×
d_ff float32, with its inverse and Cholesky factor; SlimLLM: the raw o_proj/down_proj
inputs, float32, and float64 outputs; FLAP and Wanda-sp: per-column vectors, nothing
to speak of; LLM-Pruner: the whole model on the device, its backward activations for one
gradient batch and the float32 logits); the per-layer counts from the schedule (a
data-dependent schedule is planned as uniform). Time is FLOPs / a matmul throughput
measured on the spot (a short torch matmul on the planned device, in the run's dtype;
`plan.tflops` or `plan.gpu` for a device not at hand): 2·params per token for a layer
pass plus attention's 4·seqlen·width, the passes each engine order makes (sequential 3,
dense_pass and global 2, whole_model a forward and a backward ≈ 3 forwards), SlimGPT's
Hessians (2·tokens·d²) and its Cholesky + inverse per removal step (4/3·d³), SlimLLM's
partial outputs, evaluation tokens (perplexity windows, zero-shot requests), LoRA
(≈ 4·params per token), latency's prefill and bandwidth-bound decoding.

Fitted constants (on SmolLM2-135M at scale=cpu, 2-core CPU, float32; `make bench` prints
planned vs measured): BASE_HOST_BYTES, the process before any model (interpreter, torch,
transformers, tokenizer, allocator slack); EFFICIENCY, the share of the measured matmul
throughput each kind of work reaches on a CPU; SLIMLLM_RETENTION, what glibc keeps of
SlimLLM's freed float64 temporaries; the per-sample calibration and load times.
On CUDA the efficiencies, CUDA_HOST_BYTES (the CUDA context's host memory) and the
named GPUs' throughputs are assumptions, not fits: no GPU was at hand to fit them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from slimexp.errors import SlimexpError

log = logging.getLogger(__name__)

PHASES = ("load", "calib", "prune", "finetune", "ppl", "zeroshot", "latency", "save")
GB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}

# Fitted on SmolLM2 at scale=cpu (see the docstring).
BASE_HOST_BYTES = int(0.48 * GB)
EFFICIENCY = {  # share of the measured matmul throughput reached, per kind of work
    "cpu": {"layer": 0.45, "statistics": 0.6, "linalg": 0.25, "backward": 0.60, "eval": 0.45, "train": 0.45},
    "cuda": {"layer": 0.50, "statistics": 0.8, "linalg": 0.30, "backward": 0.40, "eval": 0.50, "train": 0.40},
}
# SlimLLM's float64 temporaries (tokens × d_ff and smaller, layer after layer) are kept by
# glibc's heap once its dynamic mmap threshold has risen: on SmolLM2 the pruning peak is
# 1.98 GB, 1.11 GB with MALLOC_MMAP_THRESHOLD_=131072 (as modelled without this term). The
# retained bytes, fitted, in units of one float64 tokens × d_ff matrix:
SLIMLLM_RETENTION = 17.0
CALIB_SECONDS_PER_SAMPLE = 0.003  # drawing and tokenising one calibration window
LOAD_BYTES_PER_SECOND = 0.5e9  # reading safetensors and copying them out of the map
SAVE_BYTES_PER_SECOND = 0.3e9
CPU_BANDWIDTH = 10e9  # bytes/s a CPU streams weights at while decoding
# Assumed, not fitted: the host memory a CUDA context and its kernels take.
CUDA_HOST_BYTES = int(1.5 * GB)
# GPUs one may plan for without having them: memory (GiB), dense matmul throughput a
# short torch matmul reaches (TFLOP/s, ≈ 70% of the datasheet's, TF32 off as torch's
# default), memory bandwidth (bytes/s).
GPUS = {
    "a100-80gb": {"memory_gb": 80, "tflops": {"float32": 14.0, "bfloat16": 220.0, "float16": 220.0}, "bw": 2.0e12},
    "a100-40gb": {"memory_gb": 40, "tflops": {"float32": 14.0, "bfloat16": 220.0, "float16": 220.0}, "bw": 1.5e12},
    "h100-80gb": {"memory_gb": 80, "tflops": {"float32": 47.0, "bfloat16": 690.0, "float16": 690.0}, "bw": 3.3e12},
    "h200": {"memory_gb": 141, "tflops": {"float32": 47.0, "bfloat16": 690.0, "float16": 690.0}, "bw": 4.8e12},
}
# Evaluation sets' sizes in LLaMA-tokenizer tokens (a full split, when max_windows is unset).
PPL_TOKENS = {"wikitext2": 341_469, "ptb": 82_430, "c4": 256 * 2048}
# Zero-shot tasks: (documents, choices per document, tokens per request), full split.
TASK_SIZES = {
    "boolq": (3270, 2, 160),
    "piqa": (1838, 2, 45),
    "hellaswag": (10042, 4, 110),
    "winogrande": (1267, 2, 30),
    "arc_easy": (2376, 4, 45),
    "arc_challenge": (1172, 4, 50),
    "openbookqa": (500, 4, 30),
}
# Backward activations kept per token and layer, in hidden- and d_ff-sized vectors.
SAVED_PER_TOKEN = {"hidden": 12, "d_ff": 4}
RECLAIMABLE = "file map"
KNOBS = {
    "weights": "the weights' share: a GPU with more memory (plan.gpu=...), or device=cpu",
    "dense reference": "eval.latency.dense_reference=false",
    "calibration activations": "calib.n_samples or calib.seqlen (or dtype=bfloat16)",
    "statistics": "calib.n_samples (or device=cpu for the pruning statistics)",
    "hessians": "device=cpu (the pruning statistics on the host)",
    "kv cache": "eval.latency.decode_batch",
    "baseline": "nothing in the run (the interpreter and its libraries)",
    "allocator retention": "calib.n_samples, or MALLOC_MMAP_THRESHOLD_=131072 in the environment",
}
BATCH_KNOBS = {
    "prune": "calib.batch_size",
    "finetune": "finetune.micro_batch_size",
    "ppl": "eval.ppl.batch_size",
    "zeroshot": "eval.zeroshot.batch_size",
    "latency": "eval.latency.decode_batch",
}


@dataclass(frozen=True)
class Geometry:
    """The numbers of a decoder-only transformer the plan needs."""

    hidden: int
    d_ff: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    tied: bool
    qkv_bias: bool = False
    model_type: str = "llama"

    @property
    def layer_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * (2 * q + 2 * kv) + self.qkv_bias * (q + 2 * kv)
        return attention + 3 * self.hidden * self.d_ff + 2 * self.hidden

    @property
    def decoder_params(self) -> int:
        return self.layers * self.layer_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.decoder_params + self.embedding_params


def geometry_of(architecture) -> Geometry:
    """A transformers config (a text model's) as a Geometry."""
    config = getattr(architecture, "text_config", None) or architecture
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return Geometry(
        hidden=int(config.hidden_size),
        d_ff=int(config.intermediate_size),
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        vocab=int(config.vocab_size),
        context=int(getattr(config, "max_position_embeddings", 0) or 0),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=bool(getattr(config, "attention_bias", False)) or config.model_type == "qwen2",
        model_type=str(config.model_type),
    )


def architecture(model_cfg: dict[str, Any]):
    """The model's transformers config without weights and without the network: a random
    model's own, a local folder's, the hub cache's, else the YAML's `geometry:` block
    (None when none of these is at hand, e.g. a GGUF model not yet converted)."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from slimexp.models.loader import converted_dir

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        if model_cfg["source"] == "random":
            return AutoConfig.for_model(**model_cfg["random_config"])
        local = Path(str(model_cfg.get("hf_id")))
        if model_cfg["source"] == "gguf_package" and (converted_dir(model_cfg) / "config.json").exists():
            return AutoConfig.from_pretrained(str(converted_dir(model_cfg)))
        if model_cfg["source"] == "hub" and local.is_dir():
            return AutoConfig.from_pretrained(str(local))
        if model_cfg["source"] == "hub":
            try:
                return AutoConfig.from_pretrained(
                    model_cfg["hf_id"], revision=model_cfg.get("revision"), local_files_only=True
                )
            except (OSError, ValueError):
                pass
        geometry = model_cfg.get("geometry")
        return AutoConfig.for_model(**geometry) if geometry else None
    finally:
        hf_logging.set_verbosity(verbosity)


@dataclass
class PhasePlan:
    """One phase's needs. `*_terms` say what the bytes are (the largest names the knob)."""

    name: str
    accelerator_bytes: int = 0
    host_bytes: int = 0
    disk_bytes: int = 0
    seconds: float = 0.0
    active: bool = False
    flops: float = 0.0
    host_terms: dict[str, int] = field(default_factory=dict)
    accelerator_terms: dict[str, int] = field(default_factory=dict)

    @property
    def required_host_bytes(self) -> int:
        """The host memory the phase cannot do without (file-backed pages excluded)."""
        return self.host_bytes - self.host_terms.get(RECLAIMABLE, 0)

    def knob(self, where: str, dtype: str = "float16") -> str:
        """The setting that shrinks this phase's largest term; half precision is offered only
        where the weights are not half precision already."""
        terms = self.host_terms if where == "host" else self.accelerator_terms
        terms = {k: v for k, v in terms.items() if k != RECLAIMABLE}
        if not terms:
            return "placement (device=...)"
        largest = max(terms, key=terms.get)
        if largest == "batch":
            return BATCH_KNOBS.get(self.name, "the batch size")
        if largest == "weights" and DTYPE_BYTES.get(dtype, 2) > 2:
            return f"the weights' share: dtype=float16 or bfloat16 (now {dtype})"
        if largest == "weights" and where == "host" and self.name in ("load", "prune"):
            return "the weights' share: a host with more memory (the whole model sits there while it loads and prunes)"
        return KNOBS.get(largest, "placement (device=...)")


@dataclass
class ResourcePlan:
    model: str
    method: str
    ratio: float
    device: str  # cpu | cuda | a named GPU
    dtype: str
    tflops: float  # the matmul throughput the times assume
    throughput_source: str  # measured | plan.tflops | plan.gpu
    device_memory_bytes: int | None  # None: no accelerator
    host_memory_bytes: int
    params: int
    phases: list[PhasePlan]
    notes: list[str] = field(default_factory=list)

    def phase(self, name: str) -> PhasePlan:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(f"no phase {name!r}; phases: {', '.join(PHASES)}")

    @property
    def peak_accelerator_bytes(self) -> int:
        return max(p.accelerator_bytes for p in self.phases)

    @property
    def peak_host_bytes(self) -> int:
        return max(p.host_bytes for p in self.phases)

    @property
    def disk_bytes(self) -> int:
        return sum(p.disk_bytes for p in self.phases)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def problems(self) -> list[str]:
        """One line per resource a phase exceeds (empty when the run fits)."""
        found = []
        for where, limit, attr in (
            ("device", self.device_memory_bytes, "accelerator_bytes"),
            ("host", self.host_memory_bytes, "required_host_bytes"),
        ):
            if not limit:
                continue
            worst = max(self.phases, key=lambda p: getattr(p, attr))
            need = getattr(worst, attr)
            if need > limit:
                label = f"{self.device} memory" if where == "device" else "host memory"
                found.append(
                    f"plan: the {worst.name} phase needs {need / GB:.1f} GB of {label}, "
                    f"{limit / GB:.1f} GB available: lower {worst.knob(where, self.dtype)} "
                    "(plan.enforce=false runs it anyway)"
                )
        return found


@dataclass
class _Job:
    """What the phase models read from a resolved config."""

    config: dict[str, Any]
    geometry: Geometry
    bytes: int  # per weight, in the run's dtype
    cuda: bool
    tflops: float
    bandwidth: float
    efficiency: dict[str, float]
    tflops32: float = 0.0  # float32 throughput: statistics and their linear algebra run in it

    def seconds(self, flops: float, kind: str) -> float:
        tflops = self.tflops32 or self.tflops if kind in ("statistics", "linalg") else self.tflops
        return flops / (tflops * 1e12 * self.efficiency[kind])

    @property
    def base_host(self) -> int:
        return BASE_HOST_BYTES + (CUDA_HOST_BYTES if self.cuda else 0)

    @property
    def weights(self) -> int:
        return self.geometry.params * self.bytes

    @property
    def ratio(self) -> float:
        prune = self.config.get("prune") or {}
        return float(prune.get("ratio", 0.0)) if self.config["method"]["name"] != "dense" else 0.0

    @property
    def pruned_params(self) -> int:
        g = self.geometry
        return g.embedding_params + int(g.decoder_params * (1 - self.ratio))

    def forward_flops(self, tokens: int, seqlen: int, params: int | None = None) -> float:
        """A forward pass of the whole model (lm_head included) over `tokens`."""
        g = self.geometry
        params = self.pruned_params if params is None else params
        body = params - g.vocab * g.hidden * (1 if g.tied else 0) - g.hidden
        return 2.0 * tokens * body + 4.0 * tokens * seqlen * g.heads * g.head_dim * g.layers


def _place(job: _Job, phase: PhasePlan, device_terms: dict[str, int], host_terms: dict[str, int]) -> None:
    """Put a phase's device-side terms on the accelerator (CUDA) or on the host (CPU)."""
    host = {"baseline": job.base_host, **host_terms}
    if job.cuda:
        phase.accelerator_terms = {k: int(v) for k, v in device_terms.items() if v}
    else:
        for key, value in device_terms.items():
            host[key] = host.get(key, 0) + value
    phase.host_terms = {k: int(v) for k, v in host.items() if v}
    phase.accelerator_bytes = sum(phase.accelerator_terms.values())
    phase.host_bytes = sum(phase.host_terms.values())


def _load(job: _Job) -> PhasePlan:
    phase = PhasePlan("load", active=True)
    source = job.config["model"]["source"]
    # The safetensors file is memory-mapped while the weights are copied out of it: its pages
    # count in the resident set but are reclaimable (not held against the host's memory).
    mapped = job.weights if source != "random" else 0
    _place(job, phase, {}, {"weights": job.weights, RECLAIMABLE: mapped})
    phase.disk_bytes = {"hub": job.geometry.params * 2, "gguf_package": job.geometry.params * 4}.get(source, 0)
    phase.seconds = (job.weights + mapped) / LOAD_BYTES_PER_SECOND + 1.0
    return phase


def _calib(job: _Job) -> PhasePlan:
    phase = PhasePlan("calib")
    calib = job.config.get("calib")
    method = _method(job.config)
    if calib is None or method is None or not method.needs_calibration:
        return phase
    phase.active = True
    tokens = calib["n_samples"] * calib["seqlen"]
    _place(job, phase, {}, {"statistics": tokens * 8})
    phase.seconds = 0.2 + CALIB_SECONDS_PER_SAMPLE * calib["n_samples"]
    return phase


def _method(config: dict[str, Any]):
    """The run's pruning method, built from its config block (None for dense)."""
    method_cfg = config["method"]
    if method_cfg["name"] == "dense":
        return None
    from hydra.utils import get_class

    cls = get_class(method_cfg["_target_"])
    try:
        return cls(**{k: v for k, v in method_cfg.items() if k not in ("_target_", "name")})
    except Exception:  # preflight reports a bad setting; plan with the defaults
        return cls()


def layer_targets(job: _Job) -> list:
    """Per-layer (attention units, FFN channels) the schedule asks for; a data-dependent
    schedule (SlimLLM's cosine_softmax) is planned as uniform."""
    from hydra.utils import get_class

    from slimexp.pruning.plan import plan_layers
    from slimexp.pruning.units import LayerGeometry

    g = job.geometry
    prune = job.config["prune"]
    schedule_cfg = job.config.get("schedule") or {}
    ratios = [job.ratio] * g.layers
    try:
        schedule = get_class(schedule_cfg["_target_"])(
            **{k: v for k, v in schedule_cfg.items() if k not in ("_target_", "name")}
        )
        if not getattr(schedule, "data_dependent", False):
            ratios = schedule.layer_ratios(job.ratio, g.layers)
    except Exception:  # an unknown or bad schedule: preflight says so; plan it uniform
        pass
    bias = dict(q_bias=g.qkv_bias, k_bias=g.qkv_bias, v_bias=g.qkv_bias)
    layer = LayerGeometry(g.hidden, g.heads, g.kv_heads, g.head_dim, g.d_ff, **bias)
    return plan_layers([layer] * g.layers, ratios, prune["attn_unit"], prune["rounding"], prune["absorb_rounding"])


def _slimgpt_work(job: _Job, method, targets, tokens: int) -> tuple[float, float, dict[str, int]]:
    """(statistics FLOPs, linear-algebra FLOPs, statistics bytes): the Hessians, then a
    Cholesky and an inverse per removal step."""
    from slimexp.pruning.obs import group_sizes

    g = job.geometry
    d_attn = g.heads * g.head_dim
    hessians = 2.0 * tokens * (d_attn**2 + g.d_ff**2) * len(targets)
    flops = 0.0
    for target in targets:
        sizes = (method.max_group, method.min_group, method.dynamic_group, method.fixed_group)
        steps_ffn = len(group_sizes(target.ffn_channels, *sizes))
        flops += 4 / 3 * (target.attn_units * d_attn**3 + steps_ffn * g.d_ff**3)
    width = 8 if getattr(method, "dtype", "float32") == "float64" else 4
    # H, H⁻¹ and a Cholesky factor of down_proj's input, and the float copy of W_down.
    return hessians, flops, {"hessians": 3 * g.d_ff**2 * width + g.hidden * g.d_ff * width}


def _method_work(job: _Job, method, targets, tokens: int) -> tuple[float, float, dict[str, int]]:
    """(statistics FLOPs, linear-algebra FLOPs, statistics bytes) of one method, beyond
    the layer passes."""
    g = job.geometry
    if method.name == "slimgpt":
        return _slimgpt_work(job, method, targets, tokens)
    if method.name in ("slimllm", "slimllm_clean"):
        d_attn = g.heads * g.head_dim
        flops = g.layers * (2.0 * tokens * g.hidden * (3 * d_attn + 3 * g.d_ff) + 2.0 * tokens * g.hidden**2)
        stats = {
            "statistics": 2 * tokens * g.d_ff * 4 + 4 * tokens * g.hidden * 8,
            "allocator retention": int(SLIMLLM_RETENTION * tokens * g.d_ff * 8),
        }
        return flops, 10.0 * g.layers * g.hidden**3, stats
    return 0.0, 0.0, {"statistics": 16 * (g.heads * g.head_dim + g.d_ff) * g.layers}


def _prune(job: _Job) -> PhasePlan:
    phase = PhasePlan("prune")
    method = _method(job.config)
    if method is None:
        return phase
    phase.active = True
    g, calib = job.geometry, job.config["calib"]
    n, seqlen = (calib["n_samples"], calib["seqlen"]) if method.needs_calibration else (0, 0)
    batch = min(calib["batch_size"], max(n, 1))
    targets = layer_targets(job)
    if method.order == "whole_model":
        return _prune_whole_model(job, phase, method, n, seqlen, batch)
    tokens = n * seqlen
    passes = {"sequential": 3, "dense_pass": 2, "global": 2}.get(method.order, 0)
    schedule_cfg = job.config.get("schedule") or {}
    passes += 1 if "redundancy" in str(schedule_cfg.get("_target_", "")) else 0
    layer_flops = 2.0 * tokens * g.layer_params + 4.0 * tokens * seqlen * g.heads * g.head_dim
    stat_flops, linalg_flops, stats = _method_work(job, method, targets, tokens) if passes else (0.0, 0.0, {})
    phase.flops = passes * g.layers * layer_flops + stat_flops + linalg_flops
    phase.seconds = job.seconds(passes * g.layers * layer_flops, "layer") + job.seconds(stat_flops, "statistics")
    phase.seconds += job.seconds(linalg_flops, "linalg")
    phase.seconds += 0.5 + 0.05 * g.layers  # the capture, moving each layer, hooks, Python
    device = {
        "weights": (g.layer_params + g.vocab * g.hidden) * job.bytes if job.cuda else 0,
        "calibration activations": 2 * tokens * g.hidden * job.bytes,
        # One batch through the layer (SDPA keeps no seqlen² scores) and the hooks' float32 copy.
        "batch": batch * seqlen * ((3 * g.d_ff + 6 * g.hidden) * job.bytes + g.d_ff * 4),
        **stats,
    }
    _place(job, phase, device, {"weights": job.weights})
    return phase


def _prune_whole_model(job: _Job, phase: PhasePlan, method, n: int, seqlen: int, batch: int) -> PhasePlan:
    """LLM-Pruner: the whole model on the device, one backward pass per gradient batch."""
    g = job.geometry
    tokens, batch_tokens = n * seqlen, batch * seqlen
    gradient = n > 0
    phase.flops = 3.0 * job.forward_flops(tokens, seqlen, g.params) if gradient else 0.0
    phase.seconds = job.seconds(phase.flops, "backward") + 0.02 * g.layers
    per_token = SAVED_PER_TOKEN["hidden"] * g.hidden + SAVED_PER_TOKEN["d_ff"] * g.d_ff
    device = {"weights": job.weights}
    if gradient:
        accumulated = g.decoder_params * job.bytes if batch < n else 0
        device["batch"] = batch_tokens * per_token * g.layers * job.bytes + 3 * batch_tokens * g.vocab * 4
        device["statistics"] = accumulated + 3 * g.hidden * g.d_ff * 4
    # On CUDA the host holds the model before and after its stay on the device.
    _place(job, phase, device, {"weights": job.weights} if job.cuda else {})
    return phase


def _eval_device(job: _Job, batch: int, seqlen: int, weights: int) -> dict[str, int]:
    """A model on the device and one evaluation batch: activations and float32 logits."""
    g = job.geometry
    return {
        "weights": weights,
        "batch": batch * seqlen * (3 * g.vocab * 4 + (3 * g.d_ff + 6 * g.hidden) * job.bytes),
    }


def _forward_pass(job: _Job, phase: PhasePlan, tokens: int, seqlen: int, batch: int, overhead_s: float) -> PhasePlan:
    """An evaluation phase that runs the pruned model forward over `tokens`."""
    phase.active = True
    phase.flops = job.forward_flops(tokens, seqlen)
    phase.seconds = job.seconds(phase.flops, "eval") + overhead_s
    _place(job, phase, _eval_device(job, batch, seqlen, job.pruned_params * job.bytes), {})
    return phase


def _ppl(job: _Job) -> PhasePlan:
    phase = PhasePlan("ppl")
    ppl = job.config["eval"]["ppl"]
    if not ppl["datasets"]:
        return phase
    seqlen, tokens = ppl["seqlen"], 0
    for dataset in ppl["datasets"]:
        windows = PPL_TOKENS.get(dataset, 300_000) // seqlen
        tokens += min(windows, ppl["max_windows"] or windows) * seqlen
    return _forward_pass(job, phase, tokens, seqlen, ppl["batch_size"], 1.0 * len(ppl["datasets"]))


def _zeroshot(job: _Job) -> PhasePlan:
    phase = PhasePlan("zeroshot")
    zs = job.config["eval"].get("zeroshot") or {}
    if not zs.get("tasks"):
        return phase
    tokens, longest = 0, 0
    for task in zs["tasks"]:
        docs, choices, length = TASK_SIZES.get(task, (2000, 4, 60))
        tokens += min(docs, zs.get("limit") or docs) * choices * length
        longest = max(longest, 2 * length)
    return _forward_pass(job, phase, tokens, longest, zs["batch_size"], 10.0 * len(zs["tasks"]))


def _latency(job: _Job) -> PhasePlan:
    phase = PhasePlan("latency")
    lat = job.config["eval"].get("latency") or {}
    if not lat.get("enabled"):
        return phase
    phase.active = True
    g = job.geometry
    models = [job.pruned_params] + ([g.params] if lat.get("dense_reference") and job.ratio > 0 else [])
    rounds = lat["repeats"] + lat["warmup"]
    seconds = 0.0
    for params in models:
        prefill = job.forward_flops(lat["prefill_batch"] * lat["prefill_tokens"], lat["prefill_tokens"], params)
        step = max(2.0 * params * lat["decode_batch"] / (job.tflops * 1e12), params * job.bytes / job.bandwidth)
        seconds += rounds * (job.seconds(prefill, "eval") + lat["decode_tokens"] * step)
    phase.seconds = seconds
    length = lat["decode_prompt_tokens"] + lat["decode_tokens"]
    device = {
        "weights": job.pruned_params * job.bytes,
        "dense reference": g.params * job.bytes if len(models) > 1 else 0,
        "kv cache": lat["decode_batch"] * length * g.layers * 2 * g.kv_heads * g.head_dim * job.bytes,
        "batch": lat["decode_batch"] * g.vocab * 4 * 2 + lat["prefill_batch"] * lat["prefill_tokens"] * g.vocab * 4,
    }
    _place(job, phase, device, {})
    return phase


def _finetune(job: _Job) -> PhasePlan:
    phase = PhasePlan("finetune")
    ft = job.config.get("finetune") or {}
    if ft.get("name", "none") == "none":
        return phase
    phase.active = True
    g = job.geometry
    examples = ft.get("max_examples") or 51_760  # Alpaca-cleaned
    steps = ft.get("max_steps") or math.ceil(examples / ft["batch_size"]) * ft["epochs"]
    tokens = steps * ft["batch_size"] * ft["cutoff_len"] * 0.6  # prompts are shorter than the cutoff
    phase.flops = 4.0 / 3.0 * job.forward_flops(int(tokens), ft["cutoff_len"]) * 1.5
    phase.seconds = job.seconds(phase.flops, "train") + 5.0
    micro, length = ft["micro_batch_size"], ft["cutoff_len"]
    per_token = SAVED_PER_TOKEN["hidden"] * g.hidden + SAVED_PER_TOKEN["d_ff"] * g.d_ff
    lora = g.layers * 7 * ft["r"] * (g.hidden + g.d_ff) * 4 * 4  # weights, gradients, two Adam moments
    device = {
        "weights": job.pruned_params * job.bytes,
        "statistics": lora,
        "batch": micro * length * (per_token * g.layers * job.bytes + 3 * g.vocab * 4),
    }
    _place(job, phase, device, {})
    return phase


def _save(job: _Job) -> PhasePlan:
    phase = PhasePlan("save")
    if not job.config["results"].get("save_model"):
        return phase
    phase.active = True
    weights = job.pruned_params * job.bytes
    phase.disk_bytes = weights + 20 * 2**20  # safetensors and the tokenizer
    phase.seconds = weights / SAVE_BYTES_PER_SECOND + 1.0
    _place(job, phase, {"weights": weights}, {})
    return phase


PHASE_MODELS = (_load, _calib, _prune, _finetune, _ppl, _zeroshot, _latency, _save)


@lru_cache(maxsize=8)
def measured_tflops(device: str, dtype: str) -> float:
    """Matmul throughput (TFLOP/s) of `device` in `dtype`, measured on the spot: square
    matmuls for about a tenth of a second (a fraction of a second in all)."""
    import torch

    from slimexp.models.loader import torch_dtype

    cuda = device.startswith("cuda")
    n = 4096 if cuda else 768
    a = torch.randn(n, n, device=device).to(torch_dtype(dtype))
    b = torch.randn(n, n, device=device).to(torch_dtype(dtype))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    a @ b  # warm-up: kernels, thread pool
    sync()
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.2:  # on a busy machine one product may take longer
        a @ b
        repeats += 1
        sync()
    return 2.0 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def host_memory_bytes() -> int:
    """What this process may grow to: its own resident set plus the memory available."""
    from slimexp.evaluation.cost import current_rss_bytes

    try:
        import psutil  # installed with accelerate

        available = psutil.virtual_memory().available
    except ImportError:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    return int(available + current_rss_bytes())


def run_dtype(config: dict[str, Any]) -> str:
    """The weights' dtype (`auto`, in a config not yet resolved, is the scale's)."""
    dtype = config["dtype"]
    return (config.get("scale") or {}).get("dtype") or "float32" if dtype == "auto" else dtype


def _target_device(config: dict[str, Any]) -> tuple[str, bool, float, str, float, int | None]:
    """(label, cuda, TFLOP/s, where the throughput comes from, bandwidth, device memory)."""
    plan = config.get("plan") or {}
    dtype = run_dtype(config)
    gpu = plan.get("gpu")
    if gpu:
        if gpu not in GPUS:
            raise SlimexpError(f"plan.gpu '{gpu}' is not known; known: {', '.join(GPUS)} (or give plan.tflops)")
        spec = GPUS[gpu]
        tflops = plan.get("tflops") or spec["tflops"].get(dtype, spec["tflops"]["float32"])
        memory = int((plan.get("device_memory_gb") or spec["memory_gb"]) * GB)
        return gpu, True, tflops, "plan.tflops" if plan.get("tflops") else "plan.gpu", spec["bw"], memory
    import torch

    name = config["device"]
    cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if not cuda:
        tflops = plan.get("tflops") or measured_tflops("cpu", dtype)
        return "cpu", False, tflops, "plan.tflops" if plan.get("tflops") else "measured", CPU_BANDWIDTH, None
    device = "cuda" if name == "auto" else name
    memory = int(plan["device_memory_gb"] * GB) if plan.get("device_memory_gb") else None
    if not torch.cuda.is_available():
        if not (plan.get("tflops") and memory):
            raise SlimexpError(
                f"device={name} is not here: plan for it with plan.gpu=<{'|'.join(GPUS)}> "
                "or plan.tflops=... plan.device_memory_gb=..."
            )
        return device, True, plan["tflops"], "plan.tflops", 2.0e12, memory
    if memory is None:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        memory = int(free + torch.cuda.memory_reserved(torch.device(device)))
    tflops = plan.get("tflops") or measured_tflops(device, dtype)
    return torch.cuda.get_device_name(torch.device(device)), True, tflops, "measured", 2.0e12, memory


def _float32_tflops(config: dict[str, Any], label: str, cuda: bool, tflops: float) -> float:
    """The float32 throughput (statistics, Cholesky) when the weights are in another dtype."""
    plan = config.get("plan") or {}
    if run_dtype(config) == "float32" or plan.get("tflops"):
        return tflops
    if label in GPUS:
        return GPUS[label]["tflops"]["float32"]
    import torch

    if cuda and not torch.cuda.is_available():
        return tflops / 8  # a GPU's float32 rate is a fraction of its half-precision one
    return measured_tflops("cuda" if cuda else "cpu", "float32")


def plan_run(config: dict[str, Any]) -> ResourcePlan:
    """The resource plan of one resolved run config (what `slimexp --resolved` prints)."""
    model_cfg = config["model"]
    arch = architecture(model_cfg)
    if arch is None:
        raise SlimexpError(
            f"model {model_cfg['name']}: its geometry is unknown before its one-time conversion "
            "(run it once, or give the model YAML a geometry: block)"
        )
    label, cuda, tflops, source, bandwidth, device_memory = _target_device(config)
    plan = config.get("plan") or {}
    geometry = geometry_of(arch)
    bytes_per = DTYPE_BYTES.get(run_dtype(config), 4)
    job = _Job(config, geometry, bytes_per, cuda, tflops, bandwidth, EFFICIENCY["cuda" if cuda else "cpu"])
    job.tflops32 = _float32_tflops(config, label, cuda, tflops)
    host = int(plan["host_memory_gb"] * GB) if plan.get("host_memory_gb") else host_memory_bytes()
    result = ResourcePlan(
        model=model_cfg["name"],
        method=config["method"]["name"],
        ratio=job.ratio,
        device=label,
        dtype=run_dtype(config),
        tflops=tflops,
        throughput_source=source,
        device_memory_bytes=device_memory,
        host_memory_bytes=host,
        params=geometry.params,
        phases=[model(job) for model in PHASE_MODELS],
    )
    if (config.get("schedule") or {}).get("_target_", "").endswith("CosineSoftmax"):
        result.notes.append("the schedule allocates from data: per-layer counts planned as uniform")
    return result


def check_plan(config: dict[str, Any]) -> None:
    """Before loading: stop a run whose plan exceeds the device's or the host's memory
    (one line naming the phase and the knob); `plan.enforce=false` skips the check."""
    if not (config.get("plan") or {}).get("enforce", True):
        return
    try:
        plan = plan_run(config)
    except SlimexpError:
        return  # a geometry not known before conversion: nothing to check against
    except Exception as err:  # a planner bug must not stop a run that may well fit
        log.warning("resource plan failed (%s: %s); the run starts unchecked", type(err).__name__, err)
        return
    problems = plan.problems()
    if problems:
        raise SlimexpError(problems[0])


def _gb(value: int) -> str:
    return f"{value / GB:.2f}" if value else "-"


def _duration(seconds: float) -> str:
    if not seconds:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def format_plan(plan: ResourcePlan) -> str:
    """The plan as a plain-text table: one row per phase, then the peaks and totals."""
    memory = f"{plan.device_memory_bytes / GB:.0f} GB" if plan.device_memory_bytes else "no accelerator"
    lines = [
        f"{plan.model} {plan.method} ratio {plan.ratio:.2f}, {plan.dtype} on {plan.device} ({memory}; "
        f"{plan.tflops:.3g} TFLOP/s {plan.throughput_source}), host {plan.host_memory_bytes / GB:.0f} GB, "
        f"{plan.params / 1e9:.2f} B params",
        f"{'phase':<10}{'device GB':>11}{'host GB':>10}{'disk GB':>10}{'time':>11}  largest term",
    ]
    for p in plan.phases:
        if not p.active:
            lines.append(f"{p.name:<10}{'':>11}{'':>10}{'':>10}{'(off)':>11}")
            continue
        terms = p.accelerator_terms or p.host_terms
        largest = max(terms, key=terms.get) if terms else ""
        if p.host_terms.get(RECLAIMABLE):
            largest += " + the file's map (reclaimable)"
        row = f"{p.name:<10}{_gb(p.accelerator_bytes):>11}{_gb(p.host_bytes):>10}{_gb(p.disk_bytes):>10}"
        lines.append(f"{row}{_duration(p.seconds):>11}  {largest}")
    lines.append(
        f"{'peak/total':<10}{_gb(plan.peak_accelerator_bytes):>11}{_gb(plan.peak_host_bytes):>10}"
        f"{_gb(plan.disk_bytes):>10}{_duration(plan.seconds):>11}"
    )
    lines += [f"note: {note}" for note in plan.notes]
    lines += plan.problems()
    return "\n".join(lines)


def plan_summary(config: dict[str, Any]) -> dict[str, Any] | None:
    """The plan as a run record stores it, beside what the run then measures (None when
    the model's geometry is not known before loading)."""
    try:
        plan = plan_run(config)
    except SlimexpError:
        return None
    except Exception as err:  # the record goes on without a plan
        log.warning("resource plan failed (%s: %s)", type(err).__name__, err)
        return None
    phases = {
        p.name: {
            "accelerator_gb": p.accelerator_bytes / GB,
            "host_gb": p.host_bytes / GB,
            "disk_gb": p.disk_bytes / GB,
            "seconds": p.seconds,
        }
        for p in plan.phases
        if p.active
    }
    return {"device": plan.device, "tflops": plan.tflops, "throughput": plan.throughput_source, "phases": phases}
