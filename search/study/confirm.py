"""`budgetnas confirm`: retrain a study's top trials with more seeds, still on validation only.

A study's best trial is partly its luckiest: one validation score on 5,000 images has a
standard error of about 0.1 point, as large as the gaps between the top models
(`studies/val_vs_test.py`). Before the test split is spent on one model, its rivals get
more evidence: each of the top trials by validation is trained again, same data split and
recipe, with new seeds, and ranked by the mean of all its scores. Results are stored on the
study (user attribute `confirm`), so a rerun only trains the seeds still missing.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from ...space.errors import BadInput
from ..engine.seeds import DataSpec, SeedRun, train_seeds
from ..engine.train import Engine
from ..engine.verify import LAST
from .config import fingerprint_of
from .select import completed, rank_key, top_trials, val_acc

KEY = "confirm"  # study user attribute: {trial number: {"seeds": [...], "val_last3": [...]}}


def study_data(study: optuna.Study, data_dir) -> DataSpec:
    """The data the study's trials were scored on: its dataset, validation split and subset."""
    fp = fingerprint_of(study)
    if not fp:
        raise BadInput(f"study {study.study_name!r} was not made by `budgetnas search`: its data is not recorded.")
    return DataSpec(fp["dataset"], data_dir, val_size=fp["val_size"], val_split=fp["val_split"], subset=fp["subset"])


def confirm_seed(trial_number: int, k: int) -> int:
    """The k-th extra seed (k >= 1) of a trial; far from the study's own trial seeds."""
    return 1_000_000 * k + trial_number


def candidates(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The `top` best trials (study/select.py's ranking); BadInput if there is none to confirm."""
    trials = top_trials(study, top)
    if not trials:
        raise BadInput(f"study {study.study_name!r} has no completed trial to confirm yet.")
    return trials


def confirm(study: optuna.Study, data: DataSpec, top: int, seeds: int, engine: Engine = Engine(), jobs: int = 1,
            on_run: Callable[[int, int, float], None] | None = None) -> dict:
    """Give each of the `top` best trials by validation `seeds` extra trainings; returns the stored results.
    A training that diverges scores 0%: the trial is not robust to its seed."""
    results = dict(study.user_attrs.get(KEY, {}))
    runs = [SeedRun(data, confirm_seed(t.number, k), arch=json.dumps(t.user_attrs["arch"]), tag=t.number)
            for t in candidates(study, top)
            for k in range(len(results.get(str(t.number), {"seeds": []})["seeds"]) + 1, seeds + 1)]
    for record in train_seeds(runs, engine, jobs):
        number = record["tag"]
        score = 0.0 if record["diverged"] else statistics.mean(h["val_acc"] for h in record["history"][-LAST:])
        got = results.get(str(number), {"seeds": [], "val_last3": []})
        results[str(number)] = {"seeds": got["seeds"] + [record["seed"]], "val_last3": got["val_last3"] + [score]}
        study.set_user_attr(KEY, results)  # after every run: an interrupted confirm loses the trainings under way
        if on_run:
            on_run(number, record["seed"], score)
    return results


def confirmed_scores(study: optuna.Study, trial: FrozenTrial, results: dict | None = None) -> list[float]:
    """All validation scores of a confirmed trial, its own first; [] if it was not confirmed.
    `results`: the study's stored ones, when already read."""
    got = (study.user_attrs.get(KEY, {}) if results is None else results).get(str(trial.number))
    return [val_acc(trial)] + got["val_last3"] if got else []


def confirmed(study: optuna.Study) -> list[tuple[FrozenTrial, list[float]]]:
    """Confirmed trials with all their validation scores, best mean first (fewer params on a tie)."""
    results = study.user_attrs.get(KEY, {})  # one storage read, not one per trial
    rows = [(t, scores) for t in completed(study) if (scores := confirmed_scores(study, t, results))]
    return sorted(rows, key=lambda r: rank_key(statistics.mean(r[1]), r[0]))


def best_confirmed(study: optuna.Study) -> FrozenTrial:
    rows = confirmed(study)
    if not rows:
        raise BadInput(f"study {study.study_name!r} has no confirmed trial: run `budgetnas confirm` first.")
    return rows[0][0]


def table(study: optuna.Study) -> str:
    lines = [f"{'trial':>5} {'params':>7} {'val (trial)':>11} {'val (extra seeds)':<24} {'mean':>7} {'min':>7}"]
    for t, scores in confirmed(study):
        extra = " ".join(f"{s:.2f}" for s in scores[1:])
        lines.append(f"{t.number:>5} {t.user_attrs['params']:>7,} {scores[0]:>10.2f}% {extra:<24} "
                     f"{statistics.mean(scores):>6.2f}% {min(scores):>6.2f}%")
    return "\n".join(lines)
