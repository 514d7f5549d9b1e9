"""What a study holds: trials by state, best so far, the Pareto front, time spent."""

from __future__ import annotations

import statistics
from collections import Counter

import optuna
from optuna.trial import TrialState

from ..drill import state
from ..drill.run import STAGES, stage_study
from ..engine.verify import distribution_line, verdict_line
from ..study.config import fingerprint_of
from ..study.select import best_trial, completed, pareto_front, top_trials, val_acc
from ..study.workers import joined, worker_gone


def stale(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker, a process of this machine, no longer exists (killed): the next
    resume ends them FAIL and runs them again (study/workers.py `fail_orphans`)."""
    joins = joined(study)
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if worker_gone(t, joins)]


def running(study: optuna.Study) -> bool:
    """Does a live worker still train a trial of `study`?"""
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) > len(stale(study))


def stale_words(study: optuna.Study) -> str:
    gone = stale(study)
    return (f"; {len(gone)} stale (RUNNING, worker gone: trial {', '.join(map(str, gone))}; the same command resumes "
            "them)") if gone else ""


def prune_counts(study: optuna.Study) -> dict[str, int]:
    """Pruned trials by cause, as the objective recorded it."""
    by = Counter(t.user_attrs.get("pruned_by") for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    counts = {"over budget": by["budget"], "shape vanishes": by["shape"], "early (pruner)": by["pruner"] + by["bar"],
              "diverged": by["diverged"]}
    return counts | ({"of them, could not reach the bar": by["bar"]} if by["bar"] else {})


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
             "  by state: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())) + stale_words(study),
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


def drill_summary(study: optuna.Study) -> str:
    """`budgetnas status` of a drill: each stage, its trainings, the plan and the outcome."""
    a = study.user_attrs
    cfg, done = a.get("config", {}), a.get("done", [])
    race, choice, verified = state.read(study, "race"), state.read(study, "choice"), state.read(study, "verify")
    lines = [(f"drill {study.study_name}: budget {cfg.get('budget')} params, {cfg.get('dataset')}, "
              f"{a.get('spent', 0) / 60:.1f} of {cfg.get('hours', 0) * 60:.1f} min spent")]
    for stage in STAGES:
        word, extra = ("done" if stage in done else "pending"), ""
        if stage in ("explore", "narrow") and (s := stage_study(study, stage)) is not None:
            trained = sum(1 for t in s.get_trials(deepcopy=False) if t.user_attrs.get("history"))
            best = top_trials(s, 1)
            extra = f"{len(s.trials)} trials, {trained} trained" + (
                f", best trial {best[0].number}: {best[0].user_attrs['params']:,} params, val {val_acc(best[0]):.2f}%"
                if best else "") + stale_words(s)
            word = word if word == "done" else "running" if running(s) else "stopped"
        elif stage == "race" and race:
            extra = f"{sum(len(x.scores) - 1 for x in race.runners)} extra trainings of {len(race.runners)} candidates"
            if choice:
                extra += f"; pick trial {choice.trial}, {choice.params:,} params"
        elif stage == "verify" and (a.get("verify_runs") or verified):
            extra = f"{len(a.get('verify_runs', {}))} of {cfg.get('seeds')} seeds trained"
            if verified:
                extra += "; " + verdict_line(verified.verdict, verified.params)
                extra += "; " + distribution_line(verified.verdict) if distribution_line(verified.verdict) else ""
        lines.append(f"  {stage:8s} {word:8s} {extra}")
    return "\n".join(lines)
