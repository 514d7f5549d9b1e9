"""`budgetnas join`: more workers for a drill running elsewhere, sharing only its storage.

A joined worker decides nothing. It reads from the drill's study which stage is on and trains
for it: Explore and Narrow trials of that stage's study (its settings as the leader stored them,
this machine's data), until the stage's time on the drill's clock is spent or the leader marks it
done; Race and Verify seeds as the leader posts them (seedwork.py). It ends when the drill has
verified. Killed, it loses only the trainings under way, which its heartbeat (or, on the
leader's machine, its pid) gives back to the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import optuna

from ...space import SpaceConfig
from ..engine.train import Engine
from ..study.config import StudyConfig, StudyError
from ..study.storage import make_storage, redact
from ..study.workers import run_workers
from . import seedwork, state
from .run import STAGES, stage_study
from .state import KEY


def open_drill(name: str, storage_url: str) -> optuna.Study:
    try:
        drill = optuna.load_study(study_name=name, storage=make_storage(storage_url))
    except KeyError:
        raise StudyError(f"no drill {name!r} in {redact(storage_url)}: start it there first with `budgetnas "
                         "drill --storage ...`.") from None
    if KEY not in drill.user_attrs:
        raise StudyError(f"study {name!r} in {redact(storage_url)} is not a drill.")
    return drill


def current(drill: optuna.Study) -> str | None:
    """The stage the leader is on, or None once it has verified."""
    done = drill.user_attrs.get("done", [])
    return next((s for s in STAGES if s not in done), None)


def time_left(drill: optuna.Study, stage: str) -> float:
    """Seconds in which a training of `stage` can still start and end before the stage does."""
    p = state.read(drill, "plan")
    if p is None:
        return 0.0
    _, end, training = p.window(stage)  # as the leader's workers plan it (stage.py run_stage)
    return end - training - drill.user_attrs.get("spent", 0.0)


def stage_config(study: optuna.Study, storage_url: str, data_dir: str | None, timeout: float) -> StudyConfig:
    """The stage's settings as the leader stored them, with this machine's storage URL and data root;
    its warm starts are already queued, so none are read here."""
    stored = {k: v for k, v in study.user_attrs["config"].items() if k in {f.name for f in fields(StudyConfig)}}
    return StudyConfig(**{**stored, "space": SpaceConfig.from_dict(stored["space"]), "storage": storage_url,
                          "data_dir": data_dir, "warm_start": False, "warm_from": (), "timeout": timeout})


@dataclass(frozen=True)
class StopWhenDone:
    """After each trial: stop this worker once the leader has marked the stage done (picklable)."""

    storage_url: str
    name: str
    stage: str

    def __call__(self, study: optuna.Study, trial) -> None:
        drill = optuna.load_study(study_name=self.name, storage=make_storage(self.storage_url, heartbeat=None))
        if self.stage in drill.user_attrs.get("done", []):
            study.stop()


def join(name: str, storage_url: str, workers: int, engine: Engine = Engine(), data_dir: str | None = None,
         log=print) -> None:
    drill = open_drill(name, storage_url)
    log(f"joined drill {name} in {redact(storage_url)} with {workers} worker(s)")
    while (stage := current(drill)) is not None:
        if stage in ("explore", "narrow"):
            study, left = stage_study(drill, stage), time_left(drill, stage)
            if study is None or "config" not in study.user_attrs or left <= 0:
                time.sleep(seedwork.POLL_S)  # not set up yet, or its last trainings are under way
                continue
            log(f"[{stage}] joined, {left / 60:.1f} min of it left")
            run_workers(stage_config(study, storage_url, data_dir, left), workers, engine,
                        (StopWhenDone(storage_url, name, stage),))
        elif not seedwork.take(seedwork.seeds_study(drill), engine, workers, data_dir):
            time.sleep(seedwork.POLL_S)
    log(f"drill {name} has verified; nothing left to join")
