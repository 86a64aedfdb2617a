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
    """A random tiny llama (mha | gqa) or qwen2 (bias=True: q/k/v biases)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    heads, kv = (4, 4) if kind == "mha" else (6, 2)
    common = dict(
        vocab_size=64, hidden_size=96, intermediate_size=80, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=16,
        max_position_embeddings=256, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    if bias:
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
