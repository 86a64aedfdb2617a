"""Methods and schedules are dataclasses: their fields are the settings a config file sets,
checked in `__post_init__` (a bad value is a SlimexpError naming the setting), and
`describe()` records them for the result, with what the component found at run time
(`facts()`: a solved r_max, the layers a schedule chose)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from slimexp.errors import SlimexpError


def check_option(key: str, value: Any, options) -> None:
    """A string switch must be one of its options."""
    if value not in options:
        raise SlimexpError(f"{key} must be one of {tuple(options)}, got {value!r}")


def check_range(key: str, value: float, low: float, high: float, high_open: bool = True) -> None:
    if not (low <= value < high if high_open else low <= value <= high):
        raise SlimexpError(f"{key} must lie in [{low}, {high}{')' if high_open else ']'}, got {value}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class Component:
    name = "component"  # a class attribute, not a setting
    # The string switches and their allowed values, checked when the component is made.
    options: ClassVar[dict[str, tuple]] = {}

    def __post_init__(self):
        for key, allowed in self.options.items():
            check_option(key, getattr(self, key), allowed)

    def facts(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        settings = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.init}
        return {"name": self.name, **settings, **self.facts()}
