"""slimexp: structured pruning of LLMs (SlimGPT, SlimLLM and baselines) under one protocol."""

__version__ = "0.1.0"


def load_pruned(path, device="cpu"):
    """Reload a model saved by slimexp (non-uniform layer widths, biases); see models/checkpoint."""
    from slimexp.models.checkpoint import load_pruned as _load

    return _load(path, device)


__all__ = ["load_pruned", "__version__"]
