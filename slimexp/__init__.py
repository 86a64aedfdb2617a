"""slimexp: structured pruning of LLMs (SlimGPT, SlimLLM and baselines) under one protocol.

From Python: `load_model`, `calibration`, `prune`, `perplexity`, `load_pruned` (see
`slimexp.api`); from the shell: `slimexp` (Hydra) and `slimexp-report`.
"""

__version__ = "0.1.0"


def load_pruned(path, device="cpu"):
    """Reload a model saved by slimexp (non-uniform layer widths, biases); see models/checkpoint."""
    from slimexp.models.checkpoint import load_pruned as _load

    return _load(path, device)


def __getattr__(name):
    # The API pulls in torch and transformers: only when it is used, so `import slimexp`
    # (the CLI's first line) stays cheap.
    if name in ("load_model", "calibration", "prune", "perplexity", "PruneSettings", "PruneResult"):
        from slimexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'slimexp' has no attribute {name!r}")


__all__ = [
    "load_pruned",
    "load_model",
    "calibration",
    "prune",
    "perplexity",
    "PruneSettings",
    "PruneResult",
    "__version__",
]
