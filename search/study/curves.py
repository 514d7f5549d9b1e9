"""Can a training still reach the bar? Asked of the curves of the trainings verified before it.

Every `budgetnas verify --json` record under studies/ keeps, per seed, the accuracy after each
epoch and the worst of the last three (what the bar judges). Across the records of one dataset,
schedule and length, that worst is close to linear in the accuracy at epoch e, the more so the
later e is (`python studies/bar_curves.py` prints the fit per epoch and what the rule stops).
`ReachBar` stops a training whose predicted last-3 worst, plus `Z` standard deviations of the
fit's residuals, is below the bar: by the project's own history it cannot reach it. The median
rule (MedianBySchedule) compares a trial with its stage, so where no model of the stage can
reach the bar it still trains half of them in full; this rule compares with what passed.

The history is of test accuracy after training on every training image; the trial's curve is of
validation accuracy, which on MNIST reads lower (mnist-drill-7k-8's Narrow stopped, at 99.32%
validation, a model that passes on test). So a trial's accuracy is first raised by the largest
gap the project has measured between the two: each drill's verify record keeps its pick's
validation statistic beside the test runs (`past_offsets`); with none measured for the data,
the bar judges no one. A schedule with no verified runs of its own is judged by the others' fits,
hopeless only where every one that can judge says so. A stage keeps its first `KEEP` completed
trials whatever the bar says: the race needs entrants.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..engine.results import studies_root
from ..engine.seeds import DataSpec

Z = 2.5  # residual standard deviations of head room before a training is called hopeless
MIN_RUNS = 20  # runs an epoch's fit needs before it judges anyone
MIN_R = 0.7  # the correlation an epoch's fit needs: early in a one-cycle run the accuracy says little of the end
KEEP = 3  # completed trials a stage keeps before the bar may stop one (the race's fewest entrants)
VALIDATION_KEY = "validation_worst_last3"  # a drill's verify record: its pick's race seeds on validation, the mean of each one's worst of the last 3
DEFAULT_DATASET = next(f.default for f in fields(DataSpec) if f.name == "dataset")  # what a record without one used


@dataclass(frozen=True)
class Fit:
    """Last-3 worst ~ intercept + slope * accuracy at one epoch, over `runs` past runs."""

    intercept: float
    slope: float
    sd: float  # of the residuals
    r: float  # the correlation: where it is weak (a one-cycle run's rising rate), no verdict
    runs: int

    def hopeless(self, acc: float, bar: float) -> bool:
        return self.r >= MIN_R and self.intercept + self.slope * acc + Z * self.sd < bar


def record_dataset(record: dict) -> str:
    """The dataset a verify record was made on: its own field (written since Drill II), else its
    command's --dataset, else the default that command used."""
    if "dataset" in record:
        return record["dataset"]
    flag = re.search(r"--dataset[ =](\S+)", record.get("command", ""))
    return flag[1] if flag else DEFAULT_DATASET


def record_schedule(record: dict, path: Path) -> str | None:
    """The LR schedule a verify record's model trained with: its own field, else the Arch JSON
    beside its module (NAME.py -> NAME.json); None where neither says."""
    if "schedule" in record:
        return record["schedule"]
    arch_json = path.parent / Path(record.get("target", "")).with_suffix(".json").name
    try:
        return json.loads(arch_json.read_text())["recipe"]["schedule"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def records(root: Path | None = None) -> Iterator[tuple[Path, dict]]:
    """Every readable verify record under the studies root, with its path."""
    for path in sorted((root or studies_root()).glob("*/verify*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("runs"), list):
            yield path, record


def past_offsets(dataset: str, root: Path | None = None) -> list[float]:
    """How much higher test read than validation, for each verified drill pick of `dataset`: the
    mean over its verify seeds of the worst of the last 3 test epochs, less the same statistic of
    its race seeds on validation (`VALIDATION_KEY`, which the drill writes), each record once."""
    seen, out = set(), []
    for _, record in records(root):
        try:
            val, tests = float(record[VALIDATION_KEY]), [float(r["min_last3"]) for r in record["runs"]]
        except (KeyError, ValueError, TypeError):
            continue
        if tests and record_dataset(record) == dataset and (key := (val, tuple(tests))) not in seen:
            seen.add(key)
            out.append(statistics.mean(tests) - val)
    return out


def past_curves(dataset: str, schedule: str, epochs: int, root: Path | None = None) -> list[tuple[list[float], float]]:
    """(accuracy after each epoch, worst of the last 3) of every verified run of `dataset`,
    `schedule` and `epochs` under the studies root, each seed once (a record rerun under
    another name is one run, not two)."""
    seen, out = set(), []
    for path, record in records(root):
        if record_dataset(record) != dataset or record_schedule(record, path) != schedule:
            continue
        for run in record["runs"]:
            curve = [h["test_acc"] for h in run.get("history", ())]
            key = tuple(curve)
            if len(curve) == epochs and key not in seen:
                seen.add(key)
                out.append((curve, run["min_last3"]))
    return out


def fits(curves: list[tuple[list[float], float]]) -> dict[int, Fit]:
    """A fit per epoch (1-based) where there are MIN_RUNS runs and their accuracies vary."""
    out = {}
    if len(curves) < MIN_RUNS:
        return out
    last3 = [final for _, final in curves]
    for epoch in range(1, len(curves[0][0]) + 1):
        acc = [curve[epoch - 1] for curve, _ in curves]
        if statistics.pvariance(acc) == 0 or statistics.pvariance(last3) == 0:
            continue
        slope, intercept = statistics.linear_regression(acc, last3)
        residuals = [y - (intercept + slope * x) for x, y in zip(acc, last3)]
        out[epoch] = Fit(intercept, slope, statistics.stdev(residuals), statistics.correlation(acc, last3), len(curves))
    return out


class ReachBar(optuna.pruners.BasePruner):
    """`fallback` (the stage's own rule), and also: from the stage's KEEP-th completed trial on, a
    trial whose accuracy at this epoch, raised by `offset` (validation to test), cannot reach `bar`
    by the fits of its schedule (its `schedule` param; without any, by every other schedule's) stops.
    `fits_by_schedule` maps a schedule to its Fits (past_curves, fits); `offset` None: no verdict."""

    def __init__(self, bar: float | None, fits_by_schedule: dict[str, dict[int, Fit]],
                 fallback: optuna.pruners.BasePruner, offset: float | None = None):
        self.bar, self.fits, self.fallback, self.offset = bar, fits_by_schedule, fallback, offset
        self.stopped_by = "pruner"  # which rule said the last yes: "pruner" (the fallback) or "bar"

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        self.stopped_by = "pruner"
        if self.fallback.prune(study, trial):
            return True
        self.stopped_by = "bar"
        step = trial.last_step
        if self.bar is None or self.offset is None or step is None:
            return False
        acc = trial.intermediate_values.get(step)
        own = self.fits.get(trial.params.get("schedule"))
        judges = [f[step] for f in ([own] if own else self.fits.values()) if step in f and f[step].r >= MIN_R]
        if acc is None or math.isnan(acc) or not judges:
            return False
        if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < KEEP:
            return False
        return all(fit.hopeless(acc + self.offset, self.bar) for fit in judges)
