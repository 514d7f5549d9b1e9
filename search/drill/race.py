"""Stage 3, Race: Narrow's top candidates on extra seeds, validation only (drill/racing.py for the
rule); the pick is recorded on the drill before the test split is read."""

from __future__ import annotations

import json

from ...space import Arch
from ..engine.seeds import SeedRun
from ..study.confirm import confirm_seed
from ..study.select import completed
from . import racing as R
from . import seedwork
from .state import Choice, Race


def val_accs(trial) -> list[float]:
    return [h["val_acc"] for h in trial.user_attrs["history"]]


def race(drill) -> None:
    c, narrow = drill.cfg, drill.stage_study("narrow")
    trials = {t.number: t for t in completed(narrow)}
    state = drill.read("race")
    if state is None:
        first = sorted((R.Runner(t.number, t.user_attrs["params"], [R.seed_score(val_accs(t))]) for t in trials.values()),
                       key=lambda r: (-r.scores[0], r.params))
        state = Race(first[:R.candidates(c.n_workers)])
        drill.write("race", state)
    took = [trials[r.number].user_attrs["seconds"] for r in state.runners]
    p = drill.measure("race", max(took))  # Verify is reserved at the slowest: any runner may be the pick (7k-10's was)
    tie = 100.0 / c.val_size  # one validation image
    spec = c.stage("narrow").data
    while not (why := R.finished(state.alive(), c.bar)):
        n = min(len(r.scores) for r in state.alive())
        batch = [r for r in state.alive() if len(r.scores) == n]  # a round, posted at once: any free worker takes one
        need = R.round_seconds([trials[r.number].user_attrs.get("seconds", p.full_training_s) for r in batch], c.n_workers)
        if drill.clock.now() + need > p.race_end:
            why = "time"
            break
        runs = {f"race/trial{r.number}/seed{n}": SeedRun(spec, confirm_seed(r.number, n), tag=r.number,
                                                         arch=json.dumps(trials[r.number].user_attrs["arch"]))
                for r in batch}
        for key, record in seedwork.train(drill.study, runs, drill.engine, c.n_workers):
            number = runs[key].tag
            score = 0.0 if record["diverged"] else R.seed_score([h["val_acc"] for h in record["history"]])
            next(r for r in state.runners if r.number == number).scores.append(score)
            state.seconds.append(record["seconds"])
            drill.log(f"[race] trial {number} seed {record['seed']}: worst of last {R.LAST} val {score:.2f}%  "
                      f"({record['seconds'] / 60:.1f} min)")
            if len({len(x.scores) for x in state.alive()}) == 1:  # a round is complete: test
                kept = {x.number for x in R.survivors(state.alive(), tie)}
                for x in state.alive():
                    if x.number not in kept:
                        state.dropped[str(x.number)] = len(x.scores)
                        drill.log(f"[race] trial {x.number} dropped after {len(x.scores)} seeds")
            drill.write("race", state)
    chosen = R.pick(state.alive(), tie)
    state.ended = why
    drill.write("race", state)
    arch = Arch.from_dict(trials[chosen.number].user_attrs["arch"]).with_recipe(epochs=c.epochs)
    # the choice is stored before the test split is read (Verify), by the rule in drill/racing.py
    drill.write("choice", Choice(chosen.number, chosen.params, chosen.scores, R.statistic(chosen.scores), why,
                                 arch.to_dict()))
    drill.log(f"[race] ended ({why}); pick: trial {chosen.number}, {chosen.params:,} params, scores "
              f"{' '.join(f'{s:.2f}' for s in chosen.scores)}")
