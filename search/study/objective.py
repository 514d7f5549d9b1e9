"""The evaluator: budget check -> train with per-epoch reporting -> validation accuracy.

Every trial stores what a later reader needs (Arch JSON, params, per-epoch history,
seconds, why it stopped) as user attributes, so nothing is recomputed afterwards.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import optuna

from ...space import ShapeError, SpaceConfig, build, count_params, sample_arch, scale_to_budget
from ..engine.data import Data
from ..engine.loop import Diverged
from ..engine.train import Engine, train
from ..engine.verify import LAST  # the objective: mean validation accuracy of the last LAST epochs
from .notes import annotate_trial


def trial_seed(base_seed: int, trial_number: int) -> int:
    """Each trial's training seed: fixed by the study seed and the trial number."""
    return base_seed * 100_003 + trial_number


def stop(trial: optuna.Trial, cause: str, reason: str) -> None:
    """Record why a trial ends early: cause is budget | shape | pruner | bar | diverged."""
    trial.set_user_attr("pruned_by", cause)
    trial.set_user_attr("pruned_reason", reason)


def make_objective(
    *,
    budget: int,
    space: SpaceConfig,
    epochs: int,
    data: Data | None,
    pareto: bool = False,
    fill: bool = False,
    seed: int = 0,
    engine: Engine = Engine(),
    dry_run: bool = False,
    train_fn: Callable = train,
    notes: bool = False,
    artifact_dir: Path | None = None,
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The function `study.optimize` calls. `pareto` returns (val accuracy, params). `fill` trains
    each sample with its widths scaled to the budget (`scale_to_budget`): the sampled widths are
    proportions, so a deeper model is compared with a shallower one at the same budget.

    `notes` writes a dashboard note on every trial; `artifact_dir` also stores each trained
    trial's standalone module and learning curve there (Optuna's artifact store)."""

    def annotate(trial, arch, n, history, outcome):
        if notes:
            annotate_trial(trial, arch, n, budget, history, outcome, artifact_dir)

    epoch_lines = not sys.stdout.isatty()  # a log file gets a line an epoch; a terminal sees the trial lines

    def objective(trial: optuna.Trial):
        t0 = time.perf_counter()
        try:
            shape = {} if data is None else {"image_size": data.image_size, "in_channels": data.channels,
                                             "classes": data.classes}
            with warnings.catch_warnings():  # an enqueued model (a warm start) is given, not drawn: it may lie
                warnings.filterwarnings("ignore", "Fixed parameter", UserWarning)  # outside the narrowed ranges
                arch = sample_arch(trial, space, epochs, budget=None if fill else budget, **shape)
            if data is not None:  # the input and the head are the data's
                arch = data.shaped(arch)
            if fill:
                arch = scale_to_budget(arch, budget) or arch  # or none fits: pruned as over budget below
        except ShapeError as e:  # e.g. too many unpadded convs for the image: infeasible too
            trial.set_constraint("params", float(budget))
            stop(trial, "shape", str(e))
            raise optuna.TrialPruned(str(e)) from None
        n = count_params(arch)
        trial.set_user_attr("params", n)
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_constraint("params", float(n - budget))  # <= 0 is feasible; TPE avoids the rest
        if n > budget:
            stop(trial, "budget", f"over budget: {n} params > {budget}")
            annotate(trial, arch, n, [], f"Pruned before training: {n:,} parameters exceed the budget by {n - budget:,}.")
            raise optuna.TrialPruned(f"{n} params > budget {budget}")
        if dry_run:  # no training: every feasible model scores the same, so only the budget is learned
            return (0.0, n) if pareto else 0.0

        history: list[dict] = []

        def report(record: dict) -> None:
            history.append(record)
            trial.set_user_attr("history", history)
            if epoch_lines:
                print(f"trial {trial.number:3d} epoch {record['epoch']}/{epochs}: val {record['val_acc']:.2f}% "
                      f"({record['seconds']:.0f}s)", flush=True)
            if pareto:  # Optuna's pruners do not run in multi-objective studies
                return
            trial.report(record["val_acc"], record["epoch"])
            if trial.should_prune():
                by = getattr(trial.study.pruner, "stopped_by", "pruner")  # reach-bar says which of its rules
                stop(trial, by, f"stopped by the {'bar' if by == 'bar' else 'pruner'} after epoch {record['epoch']}")
                annotate(trial, arch, n, history, f"Stopped by the pruner after epoch {record['epoch']}: validation "
                         f"accuracy {record['val_acc']:.2f}% " + ("could no longer reach the bar by the project's "
                         "verified runs." if by == "bar" else "was not promising against earlier trials at that epoch."))
                raise optuna.TrialPruned(f"val acc {record['val_acc']:.2f}% after epoch {record['epoch']}")

        try:
            train_fn(partial(build, arch), arch.recipe, data, seed=trial_seed(seed, trial.number),
                     engine=engine, on_epoch=report, progress=False)
        except Diverged as e:
            stop(trial, "diverged", f"diverged: {e}")
            annotate(trial, arch, n, history, f"Failed: {e}. The study goes on.")
            raise optuna.TrialPruned(str(e)) from None
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
        value = statistics.mean(h["val_acc"] for h in history[-LAST:])
        trial.set_user_attr("val_last3", value)
        annotate(trial, arch, n, history, f"Completed: mean validation accuracy of the last {LAST} epochs "
                 f"{value:.2f}% with {n:,} parameters ({budget - n:,} under budget).")
        return (value, n) if pareto else value

    return objective
