"""The four handwritten experiments, as a registry of Arch values with their lab notes."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module

from budgetnas.space import Arch
from budgetnas.space.errors import BadInput

NAMES = ("exp1", "exp2", "exp3", "exp4")


@dataclass(frozen=True)
class Baseline:
    name: str  # exp1..exp4
    arch: Arch  # the model and its recipe
    target: str  # what the step sets out to do
    analysis: str  # what the numbers say; a format string over the measured results


def get(name: str) -> Baseline:
    """A baseline by its name, 'exp4'. The older spellings '4' and 'baselines/exp4' still work for
    one release, with a warning on stderr."""
    key = old_spelling(name) or name
    if key not in NAMES:
        raise BadInput(f"unknown baseline {name!r}; known: {', '.join(NAMES)}.")
    if key != name:
        print(f"budgetnas: warning: baseline {name!r} is now {key!r}; the old spelling goes in the next release",
              file=sys.stderr)
    m = import_module(f"budgetnas.baselines.{key}")
    return Baseline(key, m.ARCH, m.TARGET, m.ANALYSIS)


def old_spelling(name: str) -> str | None:
    """The baseline that an older spelling ('4', 'baselines/exp4', 'baselines/exp4.py') names, else None."""
    key = name.removeprefix("baselines/").removesuffix(".py")
    key = f"exp{key}" if key.isdigit() else key
    return key if key in NAMES and key != name else None


def all_baselines() -> list[Baseline]:
    return [get(n) for n in NAMES]
