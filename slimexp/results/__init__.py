"""The results store (one JSON record per run) and the W&B mirror of it."""
