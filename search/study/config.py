"""A study: its configuration (defaults -> TOML -> CLI), Optuna storage, sampler and pruner.

Optuna's storages are the distributed engine: SQLite by default, a PostgreSQL/MySQL URL or
a journal file for many workers. A study remembers the budget, space and fidelity it was
created with; resuming it with different ones is refused instead of mixing trials.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Self

import optuna
from optuna.trial import TrialState

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ... import baselines
from ...space import Arch, SpaceConfig, min_params, params_of
from ...space.arch import SCHEDULES, size_text
from ...space.errors import BadInput
from ...space.sample import DEFAULT_INPUT, fits, params_in
from ..engine.data import VAL_SPLITS, Data
from ..engine.seeds import DataSpec
from . import curves
from .notes import study_note
from .storage import check_storage_url, default_storage, make_storage, redact, worker_id

OBJECTIVES = ("accuracy", "pareto")
PRUNERS = ("median", "median-by-schedule", "reach-bar", "halving", "hyperband", "none")
MAX_SECONDS = 366 * 24 * 3600.0  # a time budget beyond a year is a typo, not a plan
FINGERPRINT = "budgetnas"  # study user attribute holding what the study was created with
ADDED_SINCE = {"val_split": "random", "fill": False}  # fingerprint settings added after the first studies: what they meant


class StudyError(BadInput):
    """A study that cannot be created, opened or resumed as asked."""


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99})?")


def check_name(name: str) -> str:
    """A study's name is also a folder under studies/ (and a drill's stage, NAME/stage): letters,
    digits, '.', '_' and '-', never a path that leaves studies/."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise StudyError(f"a study name must be 1-100 letters, digits, '.', '_' or '-' (it names a folder "
                         f"under studies/), but got {name!r}.")
    return name


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What a study and a drill share: a name, a budget, the data and its validation split, the
    fidelity. Each setting is declared, defaulted and checked here once."""

    name: str = "default"  # study name in the storage (a drill's: its folder under studies/)
    budget: int = 8000  # hard limit on trainable parameters
    dataset: str = "mnist"  # mnist | fashion-mnist | kmnist, or a path: your own .npz, image folder or IDX folder
    data_dir: str | None = None  # data root; default $BUDGETNAS_DATA, else ./data
    val_size: int | None = None  # validation images held out from the training file (selection sees only these); default a twelfth, at most 5000
    val_split: str = "random"  # random | tail: which training images are held out (engine/data.py)
    subset: int | None = None  # train on the first N training images (default: all but the validation split)
    epochs: int = 15  # training epochs per trial (the fidelity)
    seed: int = 0  # sampler seed; trial k trains with a seed derived from (seed, k)
    storage: str | None = None  # Optuna storage URL; default sqlite:///studies/NAME.db (a drill: its journal)
    bar: float | None = None  # test accuracy every one of the last 3 epochs must reach, %; None: no bar (a drill: no verdict; pruner reach-bar: the median rule alone)

    def __post_init__(self):
        check_name(self.name)
        whole(self, budget=1, val_size=1, epochs=1, seed=0, subset=1)
        if self.val_split not in VAL_SPLITS:
            raise StudyError(f"val_split must be one of {VAL_SPLITS}, but got {self.val_split!r}.")
        if self.bar is not None:
            check_bar(self.bar)
        check_storage_url(self.storage_url)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.name)

    @property
    def data(self) -> DataSpec:
        """The images selection trains and scores on (never the test split)."""
        return DataSpec(self.dataset, self.data_dir, self.val_size, self.val_split, self.subset)

    def with_data(self) -> tuple[Self, Data]:
        """These settings checked against their data before anything is written (the data reads, and
        holds the validation size and subset asked for), with the validation size the data was split
        with: a default one becomes the number chosen, so a resumed study compares numbers."""
        data = self.data.load()
        like = replace(DEFAULT_INPUT, in_channels=data.channels, classes=data.classes)
        smallest = min_params(self.search_space, like, image_size=data.image_size)
        if self.budget < smallest:  # every sample would be over it
            raise StudyError(f"budget {self.budget} is below the smallest model the space holds for this data "
                             f"({smallest} params for {size_text(data.image_size)} images of {data.channels} channel(s), "
                             f"{data.classes} classes).")
        return replace(self, val_size=len(data.val)), data

    @property
    def search_space(self) -> SpaceConfig:
        """The space the first trials are drawn from (a drill's Explore: the default one)."""
        return SpaceConfig()


def check_bar(bar) -> float:
    """A bar (a setting, or `verify --bar`/`pruners --bar`): a test accuracy in percent, in (0, 100]."""
    if not (isinstance(bar, (int, float)) and not isinstance(bar, bool) and 0 < bar <= 100):
        raise StudyError(f"bar is a test accuracy in percent, in (0, 100], but got {bar}.")
    return bar


MOST = {"seed": 2**32 - 1, "heartbeat": 86_400, "workers": 1024}  # an RNG's seed range; a day; processes
MAX_COUNT = 10**9  # the most of any other whole-number setting (trials, budget, images, epochs...)


def whole(cfg, **least: int) -> None:
    """Settings that are whole numbers in [least, most] (None: not set, where allowed)."""
    for name, low in least.items():
        v, high = getattr(cfg, name), MOST.get(name, MAX_COUNT)
        if v is None and name in ("subset", "val_size", "workers"):
            continue
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise StudyError(f"{name} must be a whole number in [{low}, {high}], but got {v!r}.")


@dataclass(frozen=True, kw_only=True)
class StudyConfig(RunConfig):
    trials: int = 20  # trials to run in this invocation
    timeout: float | None = None  # stop starting new trials after this many seconds
    objective: str = "accuracy"  # accuracy: max val acc | pareto: max val acc, min params
    pruner: str = "median"  # median | median-by-schedule | reach-bar | halving | hyperband | none: early stopping (accuracy objective)
    fill: bool = False  # scale each sampled model's widths by the largest one factor within the budget
    warm_start: bool = True  # enqueue the four baselines first
    warm_from: tuple[str, ...] = ()  # then these Arch JSON files (an earlier study's best), moved into the space
    dry_run: bool = False  # sample and count only, no training
    heartbeat: int = 30  # seconds between a worker's heartbeats (RDB storages); dead after 4 missed
    space: SpaceConfig = field(default_factory=SpaceConfig)

    def __post_init__(self):
        super().__post_init__()
        whole(self, trials=1, heartbeat=1)
        if self.timeout is not None and not 0 < self.timeout <= MAX_SECONDS:
            raise StudyError(f"timeout must be a number of seconds in (0, {MAX_SECONDS:.0f}], but got {self.timeout}.")
        if self.objective not in OBJECTIVES:
            raise StudyError(f"objective must be one of {OBJECTIVES}, but got {self.objective!r}.")
        if self.pruner not in PRUNERS:
            raise StudyError(f"pruner must be one of {PRUNERS}, but got {self.pruner!r}.")
        warm_params(self)  # each warm_from file reads and fits the space, before any study exists


    @property
    def search_space(self) -> SpaceConfig:
        return self.space

    def fingerprint(self) -> dict:
        """What must not change when a study is resumed."""
        return {"budget": self.budget, "objective": self.objective, "epochs": self.epochs, "dataset": self.dataset,
                "val_size": self.val_size, "val_split": self.val_split, "subset": self.subset,
                "fill": self.fill, "space": self.space.to_dict()}

    def to_dict(self) -> dict:
        """For the record (config.resolved.json, the study's attributes): the storage's password redacted."""
        return {**asdict(self), "storage": redact(self.storage), "space": self.space.to_dict()}


def fingerprint_of(study: optuna.Study) -> dict:
    """What `study` was created with (StudyConfig.fingerprint), as stored on it; {} if nothing is.
    A setting added since the study was made counts as its default."""
    fp = study.user_attrs.get(FINGERPRINT)
    return {**ADDED_SINCE, **fp, "space": {**SpaceConfig().to_dict(), **fp.get("space", {})}} if fp else {}


def load_config(path: str | Path | None, **overrides) -> StudyConfig:
    """Defaults, then the TOML file ([study] and [space] tables), then non-None overrides."""
    d: dict = {}
    if path is not None:
        try:
            toml = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise StudyError(f"{path}: no such config file.") from None
        except (OSError, UnicodeDecodeError) as e:  # a folder, permission denied, not text
            raise StudyError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e}).") from None
        except tomllib.TOMLDecodeError as e:
            raise StudyError(f"{path}: not valid TOML ({e}).") from None
        unknown = set(toml) - {"study", "space"}
        if unknown:
            raise StudyError(f"{path}: unknown tables {sorted(unknown)}; known: ['space', 'study'].")
        d = dict(toml.get("study", {}))
        known = {f.name for f in fields(StudyConfig)} - {"space"}
        if set(d) - known:
            raise StudyError(f"{path}: unknown [study] keys {sorted(set(d) - known)}; known: {sorted(known)}.")
        _check_types(path, d)
        d["space"] = SpaceConfig.from_dict(toml.get("space", {}))
    d.update({k: v for k, v in overrides.items() if v is not None})
    return StudyConfig(**d)


def _check_types(path, d: dict) -> None:
    defaults = StudyConfig.__dataclass_fields__
    types = {"int": int, "float": (int, float), "str": str, "bool": bool}
    for k, v in d.items():
        want = defaults[k].type.split(" | ")[0]
        if want == "tuple[str, ...]":
            if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise StudyError(f"{path}: [study] {k} must be a list of file names, but got {v!r}.")
            d[k] = tuple(v)
            continue
        ok = isinstance(v, types[want]) and not (want != "bool" and isinstance(v, bool))
        if not ok:
            raise StudyError(f"{path}: [study] {k} must be {want}, but got {v!r}.")


def warm_params(cfg: StudyConfig) -> dict[str, dict]:
    """Trial params of each `warm_from` file, moved into the study's space."""
    out = {}
    for path in cfg.warm_from:
        try:
            arch = Arch.from_json(Path(path).read_text())
            out[path] = params_in(cfg.space, arch)  # epochs are the study's fidelity, not a param
        except OSError as e:
            raise StudyError(f"warm_from {path}: cannot read it ({e.strerror}).") from None
        except (BadInput, ValueError, TypeError, KeyError) as e:
            raise StudyError(f"warm_from {path}: not an architecture this space can start from ({str(e).rstrip('.')}).") from None
    return out


def make_sampler(cfg: StudyConfig, worker: int = 0, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
    """TPE over the conditional space. Each worker gets its own seed, or all would propose alike;
    so does each resume (`resumed_at`: trials already in the study), or a resumed study would
    propose its first trials' models again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return StampingTPE(seed=(cfg.seed * 1000 + worker + 7919 * resumed_at) % 2**32,
                                          multivariate=True, group=True, constant_liar=True, n_startup_trials=10)


class StampingTPE(optuna.samplers.TPESampler):
    """TPE that stamps each trial with its worker as the trial is asked for, before anything else
    can happen to it: a process killed between ask and objective leaves a trial whose worker is
    known to be gone (workers.fail_orphans), not one RUNNING for good."""

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.RUNNING and "worker" not in trial.user_attrs:  # asked now, by this process
            study._storage.set_trial_user_attr(trial._trial_id, "worker", worker_id())
        super().before_trial(study, trial)


class MedianBySchedule(optuna.pruners.BasePruner):
    """Optuna's median rule, a trial judged only against completed trials of its own LR schedule.

    A one-cycle run sits below a constant-rate one until its rate comes down in the last
    epochs, so the plain median, over every completed trial, stops it early whatever it
    would have become (a drill's notebook counts each stage's trainings by schedule).
    Optuna's MedianPruner cannot be told whom to compare with, so the rule is stated here, on
    Optuna's pruner API: from step `warmup` on, a trial whose best value so far is worse than
    the median of its peers' values at that step stops; with fewer than `startup` peers that
    reached the step, nothing stops."""

    def __init__(self, startup: int, warmup: int):
        self.startup, self.warmup = startup, warmup

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup:
            return False
        schedule = trial.params.get("schedule")
        peers = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.params.get("schedule") == schedule and step in t.intermediate_values]
        if len(peers) < self.startup:
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not values:  # only NaN so far: behind everyone
            return True
        best, median = (max(values) if maximize else min(values)), statistics.median(peers)
        return best < median if maximize else best > median


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner in ("median", "median-by-schedule", "reach-bar"):  # each epoch against the median of earlier trials
        # the first epochs of a one-cycle run are noisy: no verdict before epoch 2 (epoch 1 in short runs)
        startup, warmup = 5, min(2, max(1, cfg.epochs // 3))
        if cfg.pruner == "reach-bar":  # and against what passed before (study/curves.py)
            by_schedule = {s: curves.fits(curves.past_curves(cfg.dataset, s, cfg.epochs)) for s in SCHEDULES}
            offsets = curves.past_offsets(cfg.dataset)  # the largest: a near miss on validation may pass on test
            return curves.ReachBar(cfg.bar, by_schedule, MedianBySchedule(startup, warmup), max(offsets, default=None))
        if cfg.pruner == "median-by-schedule":
            return MedianBySchedule(startup, warmup)
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if cfg.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=cfg.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(cfg: StudyConfig, storage=None, worker: int = 0) -> optuna.Study:
    """Create the study, or resume it if its fingerprint matches this config."""
    warm = warm_params(cfg)  # a bad file stops us before the study is made
    storage = storage if storage is not None else make_storage(cfg.storage_url, cfg.heartbeat)
    directions = ["maximize", "minimize"] if cfg.objective == "pareto" else ["maximize"]
    study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions,
                                sampler=make_sampler(cfg, worker), pruner=make_pruner(cfg), load_if_exists=True)
    fp = cfg.fingerprint()
    old = fingerprint_of(study)
    if not old:  # new, or its set-up was cut short (only its own warm starts queued): set up, stamped last
        if any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            raise StudyError(f"study {cfg.name!r} exists in {redact(cfg.storage_url)} but was not made by budgetnas.")
        if cfg.warm_start:  # the baselines the space can express; the budget check still applies to them
            for b in baselines.all_baselines():
                if fits(cfg.space, b.arch):
                    study.enqueue_trial(params_of(b.arch), user_attrs={"baseline": b.name}, skip_if_exists=True)
        for path, params in warm.items():
            study.enqueue_trial(params, user_attrs={"warm_from": path}, skip_if_exists=True)
        study.set_user_attr("config", json.loads(json.dumps(cfg.to_dict())))
        if not cfg.dry_run:
            study_note(study, cfg.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_acc", "params"] if cfg.objective == "pareto" else ["val_acc"])
        study.set_user_attr(FINGERPRINT, fp)  # last: a kill before it leaves a study whose resume sets it up again
        return study
    if study.trials:  # a resume: its own seed, and the process's, as two may resume at once
        study.sampler = make_sampler(cfg, worker + 1000 * os.getpid(), resumed_at=len(study.trials))
    if old != fp:
        changed = sorted(k for k in fp if fp[k] != old.get(k))
        detail = "; ".join(f"{k}: was {old.get(k)!r}, now {fp[k]!r}" for k in changed if k != "space")
        if "space" in changed:
            detail += ("; " if detail else "") + "space: changed"
        raise StudyError(f"study {cfg.name!r} was created with other settings ({detail}); "
                         "use a new --study name or the original settings.")
    return study
