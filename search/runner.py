"""Run a study: load data once, open (or resume) the study, optimize, log one line a trial."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from search import data as D
from search.objective import make_objective
from search.study import StudyConfig, open_study

STUDIES = Path("studies")


def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    a = trial.user_attrs
    value = f"val {trial.values[0]:.2f}%" if trial.values else a.get("pruned_reason", trial.state.name.lower())
    secs = a.get("seconds", 0.0)
    print(f"trial {trial.number:3d} {trial.state.name:8s} {a.get('params', 0):6,} params  {value}  ({secs:.0f}s)",
          flush=True)


def run(cfg: StudyConfig, device: str = "auto", storage=None, worker: int = 0) -> optuna.Study:
    """Optimize `cfg.trials` more trials (or until `cfg.timeout`) and return the study."""
    data = None if cfg.dry_run else D.load(cfg.dataset, cfg.data_dir, val_size=cfg.val_size, subset=cfg.subset)
    if data is not None and data.val is None:
        raise ValueError("a search needs a validation split: val_size must be > 0.")
    if storage is None and cfg.dry_run:  # a dry run never touches the real study
        storage = optuna.storages.InMemoryStorage()
    study = open_study(cfg, storage=storage, worker=worker)
    if not cfg.dry_run and worker == 0:
        out = STUDIES / cfg.name / "config.resolved.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    objective = make_objective(budget=cfg.budget, space=cfg.space, epochs=cfg.epochs, data=data,
                               pareto=cfg.objective == "pareto", seed=cfg.seed, device=device, dry_run=cfg.dry_run)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line a trial replaces Optuna's
    study.optimize(objective, n_trials=cfg.trials, timeout=cfg.timeout, callbacks=[log_trial],
                   catch=(RuntimeError,))
    return study
