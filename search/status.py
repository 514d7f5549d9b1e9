"""What a study holds: trials by state, best so far, the Pareto front, time spent."""

from __future__ import annotations

import statistics
from collections import Counter

import optuna
from optuna.trial import TrialState

from budgetnas.search.select import best_trial, completed, pareto_front, val_acc
from budgetnas.search.study import fingerprint_of


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
