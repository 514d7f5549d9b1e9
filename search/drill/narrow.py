"""Stage 2, Narrow: a space derived from Explore's best (space/derive.py, written out as TOML),
at full fidelity, every model filled to the budget, warm-started from Explore's best filled."""

from __future__ import annotations

import math

from ...space import Arch, SpaceConfig, params_of
from ...space.derive import derive_space, to_toml
from ..study.select import completed, top_trials
from .plan import full_training_from
from .stage import run_stage
from .state import Derived
from .warm import FILLED, filled, write_archs


def narrow(drill) -> None:
    c, p, explore = drill.cfg, drill.plan, drill.stage_study("explore")
    n_train = p.full_training_s / (c.epochs * p.sec_per_image)
    full = full_training_from([t.user_attrs["history"] for t in explore.get_trials(deepcopy=False)
                               if t.user_attrs.get("history")], p.explore_images, c.epochs, n_train)
    if full is not None:
        p = drill.measure("narrow", full)
    if drill.read("space") is None:
        drill.write("space", derive(drill, explore))
    got = drill.read("space")
    # every sample filled to the budget: a deeper model is compared at the budget, not pruned over it
    # (mnist-drill-7k-5's four 4-conv samples were all over it) nor left short of it
    cfg = c.stage("narrow", warm_start=True, fill=True, warm_from=tuple(got.warm), space=SpaceConfig.from_dict(got.space))
    run_stage(drill, cfg, *p.window("narrow"))


def derive(drill, explore) -> Derived:
    """Narrow's space from Explore's best 20% (3 to 8 trials), holding the best three filled to the
    budget (their widths, the weight average), which Narrow starts from."""
    c = drill.cfg
    top = top_trials(explore, max(3, min(8, math.ceil(0.2 * len(completed(explore))))))
    # filled only: Narrow fills every model, and the filled beat the plain on validation in each of
    # mnist-drill-7k-4's three pairs
    wide = {f"explore-trial{t.number}{FILLED}": filled(Arch.from_dict(t.user_attrs["arch"]), c.budget) for t in top[:3]}
    space = derive_space(SpaceConfig(), [t.params for t in top] + [params_of(a) for a in wide.values()])
    note = (f"Derived by `budgetnas drill` from the {len(top)} best of {len(completed(explore))} completed "
            f"Explore trials ({', '.join(str(t.number) for t in top)}) and the best three filled to the budget:\n"
            "what they agree on is fixed, numbers span what they used plus a margin (twice it where the best "
            "sits on the edge).")
    (c.folder / "narrow-space.toml").write_text(to_toml(space, note))
    return Derived(space.to_dict(), [t.number for t in top], list(write_archs(c.folder, wide)))
