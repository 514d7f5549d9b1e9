"""Pick a trial from a study and write its Arch as a standalone module."""

from __future__ import annotations

import statistics
from datetime import date
from pathlib import Path

import optuna

from ...space import Arch
from ...space.errors import BadInput
from ..engine.data import split_words
from ..engine.render import render
from ..study.config import fingerprint_of
from ..study.confirm import best_confirmed, confirmed_scores
from ..study.select import best_trial


def choose_trial(study: optuna.Study, number: int | None = None, params_max: int | None = None,
                 confirmed: bool = False):
    """Trial `number`, else the best confirmed one (`confirmed`), else the most accurate completed one
    (at or under `params_max` params)."""
    if confirmed:
        if number is not None or params_max is not None:
            raise BadInput("--confirmed picks the trial itself: drop --trial and --params-max.")
        return best_confirmed(study)
    if number is None:
        return best_trial(study, params_max)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials or not trials[0].values:
        raise BadInput(f"study {study.study_name!r} has no completed trial {number}.")
    return trials[0]


def export(study: optuna.Study, out: Path, number: int | None = None, params_max: int | None = None,
           epochs: int | None = None, confirmed: bool = False) -> Path:
    """Write the chosen trial as a module, or as its Arch JSON when `out` ends in .json (to warm-start
    another study); `epochs` replaces the study's (often lower) fidelity."""
    trial = choose_trial(study, number, params_max, confirmed)
    arch = Arch.from_dict(trial.user_attrs["arch"])
    if epochs is not None:
        arch = arch.with_recipe(epochs=epochs)
    fp = fingerprint_of(study)
    provenance = {
        "Study": f"{study.study_name}, trial {trial.number}"
        + (f" (baseline {trial.user_attrs['baseline']})" if "baseline" in trial.user_attrs else ""),
        "Budget": f"{fp.get('budget')} params; this model has {trial.user_attrs['params']}",
        "Validation accuracy": f"{trial.values[0]:.2f}% (mean of the last 3 of {fp.get('epochs')} epochs, "
        f"{fp.get('val_size')} held-out training images of {fp.get('dataset')}, {split_words(fp.get('val_split'))})",
        **confirmation(study, trial),
        "Exported": f"{date.today().isoformat()} by `budgetnas export`",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(arch.to_json() + "\n" if out.suffix == ".json" else render(arch, provenance))
    return out


def confirmation(study: optuna.Study, trial) -> dict:
    """The provenance line of a trial that `budgetnas confirm` retrained, else nothing."""
    scores = confirmed_scores(study, trial)
    if not scores:
        return {}
    return {"Confirmed": f"validation {' '.join(f'{s:.2f}' for s in scores)}% over {len(scores)} seeds "
            f"(mean {statistics.mean(scores):.2f}%, by `budgetnas confirm`)"}
