"""Warm starts: the baselines shrunk to the budget and every model the project verified, scaled to
it (Explore); Explore's best filled to it (Narrow)."""

from __future__ import annotations

import json
from pathlib import Path

from ... import baselines
from ...space import Arch, BadInput, ShapeError, SpaceConfig, count_params, scale_to_budget
from ...space.sample import params_in
from ..engine import data as D
from ..engine.results import studies_root
from .config import DrillConfig

PRIOR = "-prior"  # the stem suffix of a warm start that a verify passed before (warm-NAME-prior.json)

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


def verified_priors(cfg: DrillConfig, data: D.Data) -> dict[str, Arch]:
    """Every model this project verified with a PASS, whatever its dataset and budget
    (studies/NAME/best.json beside a verify*.json whose verdict passed), given this data's input
    and head and scaled to this budget, wider or narrower: a new drill starts from what passed
    before, a drill at a smaller budget from the larger drills' picks. A model verified twice (a drill
    that picked a prior) is one prior, under its first folder's name."""
    out = {}
    for arch_json in sorted(studies_root().glob("*/best.json")):
        if arch_json.parent.name == cfg.name or not any(passed(v) for v in arch_json.parent.glob("verify*.json")):
            continue
        try:
            arch = scale_to_budget(data.shaped(Arch.read(arch_json)), cfg.budget)
            if arch is not None:
                params_in(SpaceConfig(), arch)  # Explore's space can start from it
        except (BadInput, ShapeError):  # a model this image or this space cannot hold: not a prior here
            continue
        if arch is not None and arch not in out.values():
            out[f"warm-{arch_json.parent.name}{PRIOR}"] = arch
    return out


def passed(verify_json: Path) -> bool:
    """Whether a `budgetnas verify --json` record says PASS (an unreadable one does not)."""
    try:
        return json.loads(verify_json.read_text())["verdict"]["passed"] is True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_archs(folder: Path, archs: dict[str, Arch]) -> tuple[str, ...]:
    """Each Arch as folder/NAME.json, for a study's warm_from."""
    paths = []
    for name, arch in archs.items():
        path = folder / f"{name}.json"
        path.write_text(arch.to_json() + "\n")
        paths.append(str(path))
    return tuple(paths)
