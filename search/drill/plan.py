"""The drill's time plan: each stage's end on its clock and Explore's fidelity, from timed
trainings first and from measured ones as the stages start."""

from __future__ import annotations

import math
import statistics
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import optuna
import torch

from ...space import Arch, ShapeError, SpaceConfig, build, count_params, sample_arch
from ..engine import data as D
from ..engine.train import VERIFY_ENGINE, Engine, threads_each, train
from . import racing as R
from .config import DrillConfig
from .state import Plan

EXPLORE_TRIALS = 60  # trainings Explore should afford; its fidelity is chosen so that it can
TIMED_SAMPLES = 3  # models drawn from the default space and timed for the plan: cost follows shape, not size


def seconds_per_image(arch: Arch, data: D.Data, engine: Engine, images: int = 2000) -> float:
    """Training seconds per image-epoch of `arch` with `engine`: the second of two short epochs
    (the first pays one-off start-up costs)."""
    n = min(images, len(data.train))
    part = replace(data, train=D.Split(data.train.images[:n], data.train.labels[:n]), val=None)
    history = train(partial(build, arch), replace(arch.recipe, epochs=2), part, engine=engine, progress=False)
    return history[-1]["seconds"] / n


def typical_archs(budget: int, data: D.Data, k: int, seed: int) -> list[Arch]:
    """`k` models of the default space within the budget, drawn at random (seeded): what Explore trains."""
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(1000 * k):
        try:
            arch = data.shaped(sample_arch(draw.ask(), SpaceConfig(), image_size=data.image_size, budget=budget,
                                                in_channels=data.channels, classes=data.classes))
            fits = count_params(arch) <= budget
        except ShapeError:  # a shape the image cannot hold: not a model Explore trains
            continue
        if fits:
            out.append(arch)
            if len(out) == k:
                break
    return out


def timed_plan(cfg: DrillConfig, data: D.Data, warm: list[Arch], engine: Engine) -> Plan:
    """The first plan, from short timed trainings of the largest warm start and a few typical models.
    Verify's cost is the search engine's times the two engines' ratio on the first model, timed
    on the threads a worker trains with: on the leader's (all cores) fp32 eager gains more from
    the extra threads than bf16 + channels last does, the ratio came out low, and Verify was
    under-reserved (mnist-drill-7k-11: 14.1 min reserved, 25.3 taken). Search stays timed on the
    leader's threads: Explore's fidelity is calibrated to it, and the re-plans measure the
    workers' own trainings."""
    n_train = min(cfg.subset or len(data.train), len(data.train))
    # the largest warm start alone under-costed Explore 1.3-5x (mnist-drill-7k): sampled models have other shapes
    models = sorted(warm, key=count_params)[-1:] + typical_archs(cfg.budget, data, TIMED_SAMPLES, cfg.seed)
    if not models:
        raise ShapeError(f"no model of the default space has at most {cfg.budget:,} parameters on this data.")
    timed = [seconds_per_image(a, data, engine) for a in models]
    with torch_threads(threads_each(cfg.n_workers)):
        ratio = (seconds_per_image(models[0], data, replace(engine, **VERIFY_ENGINE))
                 / seconds_per_image(models[0], data, engine))
    sec_search = sum(timed) / len(timed)
    return plan(cfg, n_train, len(data.train) + cfg.val_size, sec_search, sec_search * ratio)


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` for the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plan(cfg: DrillConfig, n_train: int, n_full: int, sec_search: float, sec_verify: float) -> Plan:
    """Verify and Race are costed first (they are fixed by the seeds), Explore and Narrow share what
    is left 2:3, and Explore's fidelity is cut so that it affords EXPLORE_TRIALS trainings."""
    w = cfg.n_workers
    full = cfg.epochs * n_train * sec_search  # one full-fidelity training, one worker
    verify = math.ceil(cfg.seeds / w) * cfg.epochs * n_full * sec_verify
    race = R.rounds(w) * full
    total = cfg.seconds
    short = total - verify - race < 0.3 * total
    left = max(total - verify - race, 0.3 * total)  # too little time: Explore and Narrow keep 30%, Race shrinks
    race = max(0.0, min(race, total - verify - left))
    explore, narrow = 0.4 * left, 0.6 * left
    ratio = min(0.25, explore * w / EXPLORE_TRIALS / full) if full > 0 else 0.25  # Explore's cost per training
    epochs = max(min(2, cfg.epochs), min(cfg.epochs, round(cfg.epochs * math.sqrt(ratio))))
    images = max(min(1000, n_train), min(n_train, int(n_train * ratio * cfg.epochs / epochs)))
    return Plan(explore_end=explore, narrow_end=explore + narrow, race_end=explore + narrow + race,
                explore_epochs=epochs, explore_images=images, full_training_s=full, verify_s=verify,
                explore_training_s=epochs * images * sec_search, sec_per_image=sec_search,
                sec_per_image_verify=sec_verify, short=short)


def least_s(p: Plan) -> float:
    """The least a drill takes, whatever its hours: a stage completes at least one training per
    worker (side by side: stage.py), Explore's at its lowest fidelity and Narrow's at full; Race
    may train none; Verify trains every seed (its verdict is over all of them)."""
    return p.explore_training_s + p.full_training_s + p.verify_s


def round_up(x: float, digits: int = 2) -> float:
    """`x` rounded up to `digits` significant digits (0.0231 -> 0.024)."""
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale


def full_training_from(histories: list[list[dict]], images: int, epochs: int, n_train: float) -> float | None:
    """Seconds of one full-fidelity training, from trainings of `images` images an epoch: a start-up
    (the first epoch's excess: compilation, first kernels) plus the steady seconds an image, each
    the median over trainings. A per-trial average would charge a pruned trial's start-up to its
    one or two epochs and overcost full trainings 2-3x (mnist-drill-7k-2). None without two epochs."""
    steady = [statistics.median(h["seconds"] for h in hist[1:]) for hist in histories if len(hist) >= 2]
    if not steady:
        return None
    startup = [max(0.0, hist[0]["seconds"] - s) for hist, s in zip((h for h in histories if len(h) >= 2), steady)]
    return statistics.median(startup) + epochs * n_train * statistics.median(steady) / images


def replan(p: Plan, cfg: DrillConfig, stage: str, now: float, full_s: float) -> Plan:
    """The plan with the ends still ahead moved by a measured full-fidelity training of `full_s` s
    (one worker): Verify reserved at that cost, then Race, but never more than half of what is
    left after Verify (mnist-drill-7k-2: the race's six trainings left Narrow one round), and the
    stage starting now given the rest, at least one training per worker."""
    total = cfg.seconds
    planned = p.verify_planned_s or p.verify_s  # the first plan's, scaled once (not an earlier re-plan's again)
    verify = planned * full_s / p.full_training_s
    race = R.rounds(cfg.n_workers) * full_s
    race = min(race, max(full_s, 0.5 * (total - verify - now)))
    q = replace(p, verify_s=verify, verify_planned_s=planned, measured={**p.measured, stage: full_s})
    if stage == "narrow":
        q.narrow_end = max(now + full_s, total - verify - race)
    q.race_end = max(q.narrow_end, now if stage == "race" else 0.0, total - verify)
    return q
