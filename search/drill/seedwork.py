"""Race and Verify seeds as trials of one study, NAME/seeds, so that any free worker of any
machine trains the next one (`budgetnas join`).

The leader posts a round's trainings: each a WAITING trial whose user attributes hold the run
(engine/seeds.py `SeedRun`, by value, the module's text with it) and a key (stage, candidate,
seed). A worker claims a trial by moving it to RUNNING, which the storage grants to one taker
only, trains it with `train_seeds` and stores the record on the trial as it completes it. A
posted key that already has a trial completed, running or waiting is not posted again, so a
resumed leader retrains nothing. A taker that dies is noticed by its heartbeat (PostgreSQL:
Optuna fails the trial and queues a copy) or, on this machine, by its pid (`worker_gone`); the
key is then posted again. The leader alone posts; it also trains, and waits for every key.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..engine.seeds import DataSpec, SeedRun, train_seeds
from ..engine.train import Engine
from ..study.storage import worker_id
from ..study.workers import fail_gone, join

POLL_S = 2.0  # how often a waiting leader or an idle joined worker looks again


def seeds_study(drill_study: optuna.Study) -> optuna.Study:
    """The drill's NAME/seeds, made on first use (maximize: a trial's value is its last epoch's accuracy)."""
    return optuna.create_study(study_name=f"{drill_study.study_name}/seeds", storage=drill_study._storage,
                               direction="maximize", load_if_exists=True)


def post(study: optuna.Study, runs: dict[str, SeedRun], engine: dict | None = None) -> None:
    """Queue each keyed run that has no trial completed, running or waiting (a failed one is posted
    again); `engine`: settings every taker trains it with (Verify's fp32 eager), over its own."""
    have = {t.user_attrs.get("key") for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    for key, run in runs.items():
        if key not in have:
            module = Path(run.target).read_text() if run.target and run.target.endswith(".py") else None
            study.enqueue_trial({}, user_attrs={"key": key, "run": json.dumps(asdict(run)), "module": module,
                                                "engine": engine or {}})


def claim(study: optuna.Study, most: int) -> list[optuna.trial.FrozenTrial]:
    """Up to `most` waiting trials of one engine setting, each now RUNNING and this process's
    (another taker gets others)."""
    got = []
    join(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if len(got) == most:
            break
        if got and t.user_attrs.get("engine") != got[0].user_attrs.get("engine"):
            continue
        if study._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):  # False: someone was first
            study._storage.set_trial_user_attr(t._trial_id, "worker", worker_id())
            got.append(t)
    return got


def run_of(trial: optuna.trial.FrozenTrial, data_dir: str | None, folder: Path) -> SeedRun:
    """The trial's run for this machine: its data root here, its module written here."""
    d = json.loads(trial.user_attrs["run"])
    run = SeedRun(**{**d, "data": replace(DataSpec(**d["data"]), data_dir=data_dir if data_dir else d["data"]["data_dir"])})
    if trial.user_attrs.get("module") is not None:
        path = folder / f"seed-trial{trial.number}.py"
        path.write_text(trial.user_attrs["module"])
        run = replace(run, target=str(path))
    return replace(run, tag=trial.number)


def beat(study: optuna.Study, trials: list, stop: threading.Event) -> None:
    """Heartbeats for `trials` while they train, where the storage keeps them (RDB with heartbeats)."""
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()  # RDB storages made with a heartbeat
    if not interval:
        return
    while True:
        for t in trials:
            storage.record_heartbeat(t._trial_id)
        if stop.wait(interval / 2):
            return


def take(study: optuna.Study, engine: Engine, jobs: int, data_dir: str | None = None,
         log: Callable[[str], None] | None = None) -> int:
    """Claim up to `jobs` waiting runs, train them side by side, complete each with its record as it
    ends; how many were taken."""
    trials = claim(study, jobs)
    if not trials:
        return 0
    stop = threading.Event()
    beating = threading.Thread(target=beat, args=(study, trials, stop), daemon=True)
    beating.start()
    with tempfile.TemporaryDirectory() as folder:
        try:
            runs = [run_of(t, data_dir, Path(folder)) for t in trials]
            for record in train_seeds(runs, replace(engine, **trials[0].user_attrs["engine"]), len(runs), log=log):
                number = record["tag"]
                trial_id = next(t._trial_id for t in trials if t.number == number)
                study._storage.set_trial_user_attr(trial_id, "record", record)
                accs = [h.get("val_acc", h.get("test_acc")) for h in record["history"]] or [0.0]
                study.tell(number, accs[-1])
        finally:
            stop.set()
            beating.join()
    return len(trials)


def train(drill_study: optuna.Study, runs: dict[str, SeedRun], engine: Engine, jobs: int, fixed: dict | None = None,
          log: Callable[[str], None] | None = None) -> Iterator[tuple[str, dict]]:
    """Post `runs` (`fixed`: engine settings every taker uses), train what is waiting here (`jobs` at
    a time) while joined workers take the rest, and yield (key, record) for each as it completes:
    those completed before first."""
    study, given = seeds_study(drill_study), set()
    while True:
        fail_gone(study)  # a dead taker's run is posted again below
        post(study, runs, fixed)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            key = t.user_attrs.get("key")
            if key in runs and key not in given:
                given.add(key)
                yield key, t.user_attrs["record"]
        if given == set(runs):
            return
        if not take(study, engine, jobs, log=log):
            time.sleep(POLL_S)
