"""What Explore and Narrow share: a study run from one point of the drill's clock to another."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import optuna

from ..study.config import StudyConfig, StudyError, open_study
from ..study.select import completed
from ..study.storage import make_storage
from ..study.workers import fail_gone, run_workers


@dataclass(frozen=True)
class StageProgress:
    """After each trial: the stage, trainings done and planned, their rate, time left (picklable, for workers)."""

    stage: str
    planned: int
    epoch_share: float  # one of this stage's epochs as a share of a full training (Explore's are of fewer images)
    started: float  # time.time() at which this invocation of the stage began
    stage_deadline: float  # time.time() at which the stage stops starting trials
    drill_deadline: float  # time.time() at which the drill's hours are spent
    hours: float

    def __call__(self, study: optuna.Study, trial) -> None:
        if not trial.user_attrs.get("history"):  # pruned before training (over the budget): nothing moved
            return
        trials = study.get_trials(deepcopy=False)
        trained = sum(1 for t in trials if t.user_attrs.get("history"))
        now = time.time()
        epochs = sum(len(t.user_attrs.get("history", ())) for t in trials if t.datetime_start
                     and t.datetime_start.timestamp() >= self.started)
        rate = epochs * self.epoch_share / max(1e-9, (now - self.started) / 3600)  # full-training equivalents an hour
        print(f"[{self.stage}] {trained} trained of ~{self.planned} planned, {rate:.1f} full trainings/h; stage "
              f"{max(0, self.stage_deadline - now) / 60:.1f} min left, drill {max(0, self.drill_deadline - now) / 60:.1f} "
              f"min left of {self.hours:g} h", flush=True)


def run_stage(drill, cfg: StudyConfig, start: float, end: float, training_s: float) -> optuna.Study:
    """The stage from `start` to `end` on the drill's clock, planned in trainings of `training_s` seconds:
    trials while one can still end by `end` (Optuna's timeout only stops trials from starting:
    mnist-drill-7k-6's last Narrow trial began 14 s before its end and took the race's 13
    minutes); then, while none has completed, one more per worker (ten rounds at most: a stage
    that completes nothing has nothing to hand on)."""
    c = drill.cfg
    left = end - training_s - drill.clock.now()
    planned = max(1, round((end - start) * c.n_workers / max(1e-9, training_s)))
    full_images = len(drill.data.train)
    epoch_share = min(cfg.subset or full_images, full_images) / full_images / c.epochs
    for attempt in range(11):
        progress = StageProgress(cfg.name, planned, epoch_share, time.time(), time.time() + max(0.0, left),
                                 time.time() + c.seconds - drill.clock.now(), c.hours)
        if left > 0 or attempt > 0:
            study = run_workers(replace(cfg, timeout=left if left > 0 else None), c.workers, drill.engine, (progress,))
        else:
            study = open_study(cfg, storage=make_storage(cfg.storage_url))
        if completed(study):
            fail_gone(study)  # a joined worker killed mid-training leaves no trial RUNNING for good
            return study
        drill.log(f"[{cfg.name}] no trial has completed yet; one more per worker")
        cfg, left = replace(cfg, trials=c.n_workers), 0.0
    raise StudyError(f"{cfg.name}: no trial completed; the space or the data does not train (see its trials).")
