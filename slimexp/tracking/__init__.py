"""Run tracking: the results store (one JSON record per run) and its W&B mirror.

Not named `results`: that name is the store folder's, and ignore rules and tools treat
every `results/` directory as run output (a root pattern once hid this package)."""
