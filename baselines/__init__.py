"""The four handwritten experiments, as a registry of Arch values with their lab notes."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from ..space import Arch
from ..space.errors import BadInput

NAMES = ("exp1", "exp2", "exp3", "exp4")


@dataclass(frozen=True)
class Baseline:
    name: str  # exp1..exp4
    arch: Arch  # the model and its recipe
    target: str  # what the step sets out to do
    analysis: str  # what the numbers say; a format string over the measured results


def get(name: str) -> Baseline:
    """A baseline by its name, 'exp4'; BadInput naming the known ones for any other."""
    if name not in NAMES:
        raise BadInput(f"unknown baseline {name!r}; known: {', '.join(NAMES)}.")
    m = import_module(f".{name}", __name__)
    return Baseline(name, m.ARCH, m.TARGET, m.ANALYSIS)


def all_baselines() -> list[Baseline]:
    return [get(n) for n in NAMES]
