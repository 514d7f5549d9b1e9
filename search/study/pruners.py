"""Choosing a pruner with a measurement: replay a study's fully trained trials, epoch by epoch,
through each of Optuna's pruners, and count the epochs each would have saved and the good
trials it would have killed. Needs a study whose trials all ran to the end (a `pareto` or
`--pruner none` study); no training happens here.

(The replay keeps the trials fixed: in a live study the sampler would also react to the
pruned trials. It measures what each pruner does to the same trials.)"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from ...space.errors import BadInput
from .config import StudyConfig, make_pruner
from .select import completed, val_acc


def replay(study: optuna.Study, pruner: str, bar: float | None = None, top: int = 5) -> dict:
    """What `pruner` would have stopped of `study`'s fully trained trials; `bar` for reach-bar,
    judged by the curves of the study's dataset (study/curves.py)."""
    trials = sorted((t for t in completed(study) if t.user_attrs.get("history")), key=lambda t: t.number)
    if not trials:
        raise BadInput(f"study {study.study_name!r} has no fully trained trial to replay.")
    epochs, dataset = len(trials[0].user_attrs["history"]), study.user_attrs.get("config", {}).get("dataset")
    cfg = StudyConfig(pruner=pruner, epochs=epochs, bar=bar, **({"dataset": dataset} if dataset else {}))
    replayed = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    trained, killed = 0, set()
    for t in trials:
        replayed.enqueue_trial(t.params)  # the same params: a pruner may compare by them
        live = replayed.ask(t.distributions)
        for record in t.user_attrs["history"]:
            live.report(record["val_acc"], record["epoch"])
            trained += 1
            if live.should_prune():
                killed.add(t.number)
                replayed.tell(live, state=TrialState.PRUNED)
                break
        else:
            replayed.tell(live, val_acc(t))
    best = sorted(trials, key=val_acc, reverse=True)[:top]
    full = sum(len(t.user_attrs["history"]) for t in trials)
    return {"pruner": pruner, "trials": len(trials), "epochs_trained": trained, "epochs_full": full,
            "cost": trained / full, f"top{top}_kept": sum(t.number not in killed for t in best),
            "best_kept": best[0].number not in killed}


def table(rows: list[dict], top: int = 5) -> str:
    lines = [f"{'pruner':<18} {'epochs trained':>15} {'of full':>8} {f'top-{top} kept':>10} {'best kept':>10}"]
    lines += [f"{r['pruner']:<18} {r['epochs_trained']:>15} {r['cost']:>8.0%} {r[f'top{top}_kept']:>10} "
              f"{'yes' if r['best_kept'] else 'no':>10}" for r in rows]
    return "\n".join(lines)
