import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("SLIMEXP_DATA_DIR", str(SHARED_DATA))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def build_tiny(kind: str = "gqa", bias: bool = False, layers: int = 3, seed: int = 0, dtype=torch.float32):
    """A random tiny llama (mha | gqa), qwen2 (bias=True: q/k/v biases) or gemma3 (one KV
    head, sliding-window layers alternating with full-attention ones of another RoPE base)."""
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    heads, kv = {"mha": (4, 4), "gemma3": (4, 1)}.get(kind, (6, 2))
    common = dict(
        vocab_size=64,
        hidden_size=96,
        intermediate_size=80,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    if kind == "gemma3":
        # A window shorter than the test sequences, so the two kinds' masks differ.
        types = ["full_attention" if i % 2 else "sliding_attention" for i in range(layers)]
        config = Gemma3TextConfig(
            **common,
            layer_types=types,
            sliding_window=8,
            query_pre_attn_scalar=16,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
        )
        model = Gemma3ForCausalLM(config)
    elif bias:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.to(dtype).eval()


@pytest.fixture
def tiny():
    return build_tiny


@pytest.fixture
def data_dir():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return str(SHARED_DATA)


def prune_uniformly(model, method, ratio, policy, calibration=None, batch_size=3, absorb=True, rounding="round"):
    """Prune every layer at `ratio` through slimexp's one pruning call. Returns (the plan,
    computed on its own from the geometry; what the call did in each layer)."""
    from slimexp.models.adapters import adapter_for
    from slimexp.pruning import surgery
    from slimexp.pruning.api import PruneSettings, prune
    from slimexp.pruning.plan import plan_layers

    adapter = adapter_for(model)
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    targets = plan_layers(geometries, [ratio] * len(geometries), policy, rounding, absorb)
    result = prune(
        model,
        method=method,
        ratio=ratio,
        calibration=calibration,
        settings=PruneSettings(policy, rounding, absorb),
        batch_size=batch_size,
    )
    return targets, result.layers


def capture_input(model, module, calibration):
    """The input `module` sees when `model` runs `calibration`: (tokens, width)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        model(calibration)
    handle.remove()
    return torch.cat(seen).reshape(-1, seen[0].shape[-1])


def config_for(tmp_path, *overrides):
    """The composed config of a run on the tiny GQA llama, small caps, its store in tmp_path."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from slimexp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "model=tiny-llama-gqa",
                "eval.ppl.max_windows=4",
                "calib.n_samples=4",
                "calib.seqlen=32",
                f"results.dir={tmp_path}",
                *overrides,
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)


def record_dict(key, method, ratio, ppl, experiment="exp", status="done", **extra):
    """A store record with one metric, for report and store tests."""
    return {
        "run_key": key,
        "status": status,
        "experiment": experiment,
        "method": method,
        "model": "m",
        "ratio": ratio,
        "finetune": "none",
        "metrics": {"ppl/wikitext2": ppl},
        **extra,
    }


def run_module(module: str, *args, env: dict | None = None, timeout: int = 300):
    """`python -m module args` from the repository, output captured (a finished process)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
