"""Parameter checks that run before any data is loaded or any model is trained.

Every public entry point (the CLI, the notebooks, the training functions) calls these on
its inputs first, so that a typo costs a second instead of an hour of GPU time. Each check
raises :class:`ConfigError`, a ``ValueError`` whose message names the parameter, what it
got and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


class ConfigError(ValueError):
    """An experiment parameter has a value the code cannot run with."""


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{name} must be one of {choices}; got {value!r}")
    return value


def check_choices(name: str, values: Sequence[str], allowed: Iterable[str]) -> tuple[str, ...]:
    """One or more of ``allowed``, as a tuple (a bare string is refused: it is not a list of names)."""
    allowed = tuple(allowed)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        choices = ", ".join(map(repr, allowed))
        raise ConfigError(f"{name} must be a non-empty list, each one of {choices}; got {values!r}")
    return tuple(check_choice(f"each of {name}", value, allowed) for value in values)


def check_nonnegative(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1; got {value!r}")
    return value


def check_nonnegative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0; got {value!r}")
    return value


def check_classes_per_image(value: Any, num_classes: int) -> int | None:
    """k target classes per sample: None (all C) or an integer in 1..C."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_classes):
        raise ConfigError(
            f"classes_per_image must be an integer in 1..{num_classes} or None (all classes); got {value!r}"
        )
    return value


def check_seeds(name: str, seeds: Sequence[Any]) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise ConfigError(
            f"{name} must be a list of integers such as [0, 1, 2]; got {seeds!r} "
            f"(with papermill, pass lists as YAML: -y '{name}: [0, 1, 2]')"
        )
    seeds = list(seeds)
    if not seeds:
        raise ConfigError(f"{name} must list at least one integer seed; got an empty list")
    for seed in seeds:
        check_nonnegative_int(f"each of {name}", seed)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{name} must not repeat a seed; got {seeds!r}")
    return seeds
