"""Which trial: the one ranking every command picks by (status, export, confirm, report, the drill).

Higher validation score first; on a tie, fewer parameters (the budget is the point), then the
earlier trial, so that a pick never depends on the order a storage returns trials in.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...space.errors import BadInput


def val_acc(t: FrozenTrial) -> float:
    return t.values[0]


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]


def rank_key(score: float, t: FrozenTrial) -> tuple:
    """Sort key of a trial with `score` (its own validation score, or a mean over seeds): best first."""
    return -score, t.user_attrs["params"], t.number


def top_trials(study: optuna.Study, k: int | None = None, params_max: int | None = None) -> list[FrozenTrial]:
    """The `k` best completed trials (all when None), at or under `params_max` params when given."""
    trials = [t for t in completed(study) if params_max is None or t.user_attrs["params"] <= params_max]
    return sorted(trials, key=lambda t: rank_key(val_acc(t), t))[:k]


def best_trial(study: optuna.Study, params_max: int | None = None) -> FrozenTrial:
    """The best completed trial (at or under `params_max` params when given); BadInput if none."""
    trials = top_trials(study, 1, params_max)
    if not trials:
        limit = f" with at most {params_max} params" if params_max is not None else ""
        raise BadInput(f"study {study.study_name!r} has no completed trial{limit} yet.")
    return trials[0]


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials not beaten by another on both val accuracy (higher) and params (lower)."""
    front = []
    for t in sorted(trials, key=lambda t: (t.user_attrs["params"], -val_acc(t), t.number)):
        if not front or val_acc(t) > val_acc(front[-1]):
            front.append(t)
    return front
