"""What a study holds: trials by state, best so far, the Pareto front, time spent."""

from __future__ import annotations

import statistics
from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study import fingerprint_of
from space.errors import BadInput


def val_acc(t: FrozenTrial) -> float:
    return t.values[0]


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials not beaten by another on both val accuracy (higher) and params (lower)."""
    front = []
    for t in sorted(trials, key=lambda t: (t.user_attrs["params"], -val_acc(t))):
        if not front or val_acc(t) > val_acc(front[-1]):
            front.append(t)
    return front


def best_trial(study: optuna.Study, params_max: int | None = None) -> FrozenTrial:
    """Most accurate completed trial (at or under `params_max` params when given)."""
    trials = [t for t in completed(study) if params_max is None or t.user_attrs["params"] <= params_max]
    if not trials:
        limit = f" with at most {params_max} params" if params_max is not None else ""
        raise BadInput(f"study {study.study_name!r} has no completed trial{limit} yet.")
    return max(trials, key=lambda t: (val_acc(t), -t.user_attrs["params"]))


def prune_counts(study: optuna.Study) -> dict[str, int]:
    """Pruned trials by cause, as the objective recorded it."""
    by = Counter(t.user_attrs.get("pruned_by") for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    return {"over budget": by["budget"], "shape vanishes": by["shape"], "early (pruner)": by["pruner"],
            "diverged": by["diverged"]}


def over_budget_ms(study: optuna.Study) -> float | None:
    """Median wall time of an over-budget trial (ask to prune, sampling and storage included)."""
    d = [(t.datetime_complete - t.datetime_start).total_seconds() * 1000
         for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
         if t.user_attrs.get("pruned_by") == "budget" and t.datetime_start and t.datetime_complete]
    return statistics.median(d) if d else None


def seconds_spent(study: optuna.Study) -> float:
    return sum(t.user_attrs.get("seconds", 0.0) for t in study.get_trials(deepcopy=False))


def summary(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    budget = fingerprint_of(study).get("budget")
    lines = [(f"study {study.study_name}: {len(trials)} trials, budget {budget} params, "
             f"{seconds_spent(study) / 60:.1f} min of training"),
             "  by state: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())),
             "  pruned:   " + ", ".join(f"{k} {v}" for k, v in prune_counts(study).items())]
    ms = over_budget_ms(study)
    if ms is not None:
        lines.append(f"  an over-budget trial took {ms:.0f} ms (median), sampling and storage included")
    done = completed(study)
    if not done:
        return "\n".join(lines + ["  no completed trial yet"])
    b = best_trial(study)
    lines.append(f"  best:     trial {b.number}, {b.user_attrs['params']:,} params, val {val_acc(b):.2f}% (mean of last 3)")
    lines.append("  Pareto front (params, val acc):")
    lines += [f"    trial {t.number:4d} {t.user_attrs['params']:7,}  {val_acc(t):.2f}%" for t in pareto_front(done)]
    return "\n".join(lines)
