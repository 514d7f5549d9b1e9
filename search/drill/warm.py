"""Warm starts: the baselines shrunk to the budget (Explore) and Explore's best filled to it (Narrow)."""

from __future__ import annotations

from pathlib import Path

from ... import baselines
from ...space import Arch, ShapeError, count_params, scale_to_budget
from ..engine import data as D
from .config import DrillConfig

FILL_EMA = 0.998  # the weight average of Narrow's filled warm starts (docs/design.md)
FILLED = "-filled"  # the stem suffix of a filled warm start's Arch JSON (explore-trialN-filled.json)


def filled(arch: Arch, budget: int) -> Arch:
    """Explore's pick as Narrow starts from it: widened to fill the budget (Explore's low fidelity
    favours small, fast-converging models: the three 7k drills picked 5,404-5,608 of 7,000
    parameters, both models that pass use 6,960-7,570) and with the weight average on, which
    costs no parameter (docs/design.md; +0.03 point min last-3 test on mnist-7k's trial 16)."""
    return (scale_to_budget(arch, budget) or arch).with_recipe(ema=FILL_EMA)


def shrunk_baselines(cfg: DrillConfig, data: D.Data) -> dict[str, Arch]:
    """The baselines that exceed the budget on this data, shrunk to it (those that fit are enqueued
    by the study itself; those the image cannot take are left out)."""
    out = {}
    for b in baselines.all_baselines():
        try:
            arch = data.shaped(b.arch)
            over = count_params(arch) > cfg.budget
        except ShapeError:
            continue
        small = scale_to_budget(arch, cfg.budget) if over else None
        if small is not None:
            out[f"warm-{b.name}-shrunk"] = small
    return out


def write_archs(folder: Path, archs: dict[str, Arch]) -> tuple[str, ...]:
    """Each Arch as folder/NAME.json, for a study's warm_from."""
    paths = []
    for name, arch in archs.items():
        path = folder / f"{name}.json"
        path.write_text(arch.to_json() + "\n")
        paths.append(str(path))
    return tuple(paths)
