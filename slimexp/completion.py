"""Shell completion for nested config groups.

Hydra completes `group=` only with the files directly in a group's folder and offers each
subfolder as a group of its own (`experiment/slimllm`), which is not how slimexp names them:
`experiment=slimllm/table5_alpha`, `recipe=slimllm/paper`, `variant=lora/slimllm`. Words
that name one of our groups are answered here from the folders; every other word is left
to Hydra, with the subfolder pseudo-groups removed from its answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from slimexp.experiments import experiment_names
from slimexp.paths import CONF_DIR


def is_query(argv: list[str]) -> bool:
    """`slimexp -sc query=bash` (what the installed completion script calls)."""
    return any(a in ("-sc", "--shell-completion") for a in argv) and any(a.startswith("query=") for a in argv)


def group_options(group: str) -> list[str] | None:
    """Every option of a config group, nested ones as `sub/name`; None if no such group."""
    if group == "experiment":
        return experiment_names()
    folder = CONF_DIR / group
    if group.startswith(("hydra", ".")) or ".." in group or not folder.is_dir():
        return None
    return sorted(str(path.relative_to(folder).with_suffix("")) for path in folder.rglob("*.yaml"))


def _as_override(word: str) -> str | None:
    """Hydra's word, with subfolder pseudo-groups dropped and bare group names as `group=`."""
    if "=" in word or group_options(word.partition("/")[0]) is None:
        return word
    return None if "/" in word else f"{word}="


def complete(hydra_query: Callable[[], str]) -> list[str]:
    """The completion answer for the last word of $COMP_LINE."""
    word = os.environ.get("COMP_LINE", "").split(" ")[-1]
    key, equals, prefix = word.partition("=")
    options = group_options(key.lstrip("+~")) if equals else None
    if options is not None:
        return [f"{key}={name}" for name in options if name.startswith(prefix)]
    words = (_as_override(w) for w in hydra_query().split())
    return list(dict.fromkeys(w for w in words if w))
