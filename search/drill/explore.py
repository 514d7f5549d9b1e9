"""Stage 1, Explore: the broad default space at a low fidelity chosen from the time budget, the
baselines (shrunk to the budget where they exceed it) and the project's verified models (scaled
to it) warm-started."""

from __future__ import annotations

from dataclasses import replace

from ...space import SpaceConfig
from .stage import run_stage
from .warm import shrunk_baselines, verified_priors, write_archs


def explore(drill) -> None:
    p = drill.plan
    cfg = drill.cfg.stage("explore", epochs=p.explore_epochs, subset=p.explore_images, space=SpaceConfig())
    warm = write_archs(drill.cfg.folder, {**shrunk_baselines(drill.cfg, drill.data), **verified_priors(drill.cfg, drill.data)})
    run_stage(drill, replace(cfg, warm_from=warm), *p.window("explore"))
