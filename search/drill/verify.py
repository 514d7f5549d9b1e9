"""Stage 4, Verify: the pick, rendered as a module, retrained by that module's recipe on all
training images over `seeds` seeds and tested, as `budgetnas verify` does. The test split is
first read here."""

from __future__ import annotations

import statistics
from dataclasses import replace

from ...space import Arch, count_params
from ..engine.render import render
from ..engine.results import write_json
from ..engine.seeds import DataSpec, SeedRun
from ..engine.train import VERIFY_ENGINE
from ..engine.verify import distribution_line, summarise, verdict, verdict_line, verify_record
from ..study.curves import VALIDATION_KEY
from . import racing as R
from . import seedwork
from .state import Verified


def verify(drill) -> None:
    c, choice = drill.cfg, drill.read("choice")
    arch = Arch.from_dict(choice.arch)
    module = c.folder / "best.py"
    (c.folder / "best.json").write_text(arch.to_json() + "\n")
    module.write_text(render(arch, {
        "Drill": f"{c.name}, Narrow trial {choice.trial}, picked by the race",
        "Budget": f"{c.budget} params; this model has {choice.params}",
        "Race": f"validation, worst of the last {R.LAST} epochs per seed: {' '.join(f'{s:.2f}' for s in choice.scores)}%",
    }))
    engine = replace(drill.engine, **VERIFY_ENGINE)
    done = {int(k): v for k, v in drill.study.user_attrs.get("verify_runs", {}).items()}
    todo = [s for s in range(c.seeds) if s not in done]
    drill.log(f"[verify] {module}: {count_params(arch):,} params, seeds {todo} of {c.seeds} to train")
    runs = {f"verify/seed{seed}": SeedRun(DataSpec(c.dataset, c.data_dir), seed, target=str(module)) for seed in todo}
    for _, record in seedwork.train(drill.study, runs, engine, c.n_workers, fixed=VERIFY_ENGINE, log=drill.log):
        done[record["seed"]] = summarise(record)
        drill.study.set_user_attr("verify_runs", {str(k): v for k, v in done.items()})  # each seed kept as it ends
    summaries = [done[s] for s in range(c.seeds)]
    v = verdict(summaries, c.bar)
    on_validation = {VALIDATION_KEY: statistics.mean(choice.scores)}  # what reach-bar's val-to-test gap is read from
    write_json(c.folder / "verify.json", verify_record(str(module), v, summaries, c.dataset, arch.recipe, engine,
                                                       on_validation))
    drill.write("verify", Verified(v, count_params(arch)))
    drill.log(f"[verify] {verdict_line(v, count_params(arch))}; {distribution_line(v)}")
