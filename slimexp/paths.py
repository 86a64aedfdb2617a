"""Where the repository's own folders are: the Hydra config groups and the experiment files."""

from __future__ import annotations

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_DIR / "conf"
EXPERIMENTS_DIR = REPO_DIR / "experiments"
