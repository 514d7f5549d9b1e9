"""`budgetnas drill`: from a parameter budget to a verified module, the course's drill-down automated.

    explore  the broad default space at a low fidelity chosen from the time budget (explore.py)
    narrow   a space derived from Explore's best, at full fidelity (narrow.py)
    race     Narrow's top candidates on extra seeds, validation only (race.py); the pick is
             recorded on the drill before the test split is read
    verify   the pick, exported as a module, retrained and tested over `seeds` seeds (verify.py)

All stages live in one Optuna storage: the studies NAME/explore and NAME/narrow, and the
drill's own study NAME, whose user attributes hold its config, time plan, clock and each
stage's record (state.py). Each is stored as soon as it exists, so the same command after a
crash (even `kill -9`) resumes: a finished training is never lost or repeated and a finished
stage never runs again. A stage is a function of the drill in a file of its own; adding one is
adding it to STAGES. Files (space TOML, Arch JSON, module, verify JSON) go to studies/NAME/.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import optuna

from ..engine.train import Engine
from ..study.config import StudyError
from ..study.storage import make_storage, redact
from . import state
from .clock import Clock
from .config import DrillConfig
from .explore import explore
from .lock import drill_lock
from .narrow import narrow
from .plan import least_s, replan, round_up, timed_plan
from .race import race
from .state import KEY, Plan, Verified
from .verify import verify
from .warm import shrunk_baselines

STAGES = {"explore": explore, "narrow": narrow, "race": race, "verify": verify}


class Drill:
    """A drill's study, opened or resumed, and what its stages read and write."""

    def __init__(self, cfg: DrillConfig, engine: Engine = Engine(), log=print):
        cfg, data = cfg.with_data()  # checked against the data before a folder or a journal is made
        self.cfg, self.data, self.engine, self.log = cfg, data, engine, log  # data: read once, validation held out
        log(f"data: {cfg.dataset}, {len(data.train):,} training and {len(data.val):,} validation images")
        # a new drill is planned before its folder and journal exist: hours too short are refused having written nothing
        first = None if cfg.folder.exists() else self.timed_plan(spent=0.0)
        cfg.folder.mkdir(parents=True, exist_ok=True)
        self.study = optuna.create_study(study_name=cfg.name, storage=make_storage(cfg.storage_url), load_if_exists=True)
        old = self.study.user_attrs.get(KEY)
        if old is None:
            if self.study.trials:
                raise StudyError(f"study {cfg.name!r} exists in {redact(cfg.storage_url)} and is not a drill.")
            self.study.set_user_attr(KEY, cfg.fingerprint())
            self.study.set_user_attr("config", {**asdict(cfg), "storage": redact(cfg.storage)})
        elif changed := cfg.changed_since(old):
            raise StudyError(f"drill {cfg.name!r} was started with other settings ({changed}); "
                             "use a new --name or the original settings.")
        if first is not None and self.plan is None:
            self.study.set_user_attr("spent", first[1])  # the timing is the drill's time too
            self.store_plan(first[0])

    def read(self, key: str):
        return state.read(self.study, key)

    def write(self, key: str, record) -> None:
        state.write(self.study, key, record)

    @property
    def plan(self) -> Plan:
        return self.read("plan")

    def stage_study(self, stage: str) -> optuna.Study | None:
        return stage_study(self.study, stage)

    def done(self) -> list[str]:
        return self.study.user_attrs.get("done", [])

    def run(self) -> Verified | None:
        with drill_lock(self.cfg.folder, self.log):
            self.clock = Clock(self.study)
            try:
                if self.plan is None:
                    self.store_plan(self.timed_plan(spent=self.clock.now())[0])
                if self.plan.short:
                    self.log(f"drill: warning: {self.cfg.hours:g} h does not cover Race and Verify at full fidelity (a "
                             f"training takes about {self.plan.full_training_s / 60:.1f} min here); every stage gets "
                             "its minimum.")
                for name, stage in STAGES.items():
                    if name not in self.done():
                        self.log(f"[{name}] starting at {self.clock.now() / 60:.1f} min of {self.cfg.hours * 60:.1f}")
                        stage(self)
                        now, ended = self.clock.save(), self.study.user_attrs.get("ended", {})
                        self.study.set_user_attr("ended", {**ended, name: now})  # beside the plan's ends, in the notebook
                        self.study.set_user_attr("done", [*self.done(), name])
                        self.log(f"[{name}] done at {now / 60:.1f} min of {self.cfg.hours * 60:.1f}")
            finally:
                self.clock.close()
        return self.read("verify")

    def timed_plan(self, spent: float) -> tuple[Plan, float]:
        """The first plan, from timed trainings, and the drill's seconds once they are done (`spent`
        before them); StudyError where the hours cannot hold the least a drill takes (`least_s`)."""
        c, data, t0 = self.cfg, self.data, time.monotonic()
        p = timed_plan(c, data, list(shrunk_baselines(c, data).values()), self.engine)
        spent += time.monotonic() - t0
        if spent + least_s(p) > c.seconds:  # the stages' minimums would overrun the hours, whatever the plan
            need = round_up(1.1 * (spent + least_s(p)) / 3600)  # 10% for the timing's noise
            raise StudyError(f"--hours {c.hours:g} is too short for this drill: one Explore and one Narrow training "
                             f"and {c.seeds} Verify seed(s) take about {(spent + least_s(p)) / 60:.1f} min here, the "
                             f"timing included (one full training about {p.full_training_s / 60:.1f} min); use --hours "
                             f"{need:g} or more, or fewer --seeds or --epochs.")
        return p, spent

    def store_plan(self, p: Plan) -> None:
        c = self.cfg
        self.write("plan", p)
        self.log(f"drill: plan for {c.hours:g} h on {c.n_workers} worker(s): explore at {p.explore_epochs} epochs x "
                 f"{p.explore_images:,} images until {p.explore_end / 60:.1f} min, narrow at {c.epochs} epochs until "
                 f"{p.narrow_end / 60:.1f}, race until {p.race_end / 60:.1f}, then verify (about {p.verify_s / 60:.1f} "
                 f"min); one full training about {p.full_training_s / 60:.1f} min")

    def measure(self, stage: str, full_s: float) -> Plan:
        """Re-plan once, as `stage` starts, from what trainings really took."""
        p = self.plan
        if stage not in p.measured:
            p = replan(p, self.cfg, stage, self.clock.now(), full_s)
            self.write("plan", p)
            self.log(f"[{stage}] measured: one full training about {full_s / 60:.1f} min; {stage} until "
                     f"{getattr(p, stage + '_end') / 60:.1f} min, verify about {p.verify_s / 60:.1f} min")
        return p


def stage_study(drill: optuna.Study, stage: str) -> optuna.Study | None:
    """The study of one of a drill's stages (NAME/stage) in the drill's storage; None before it exists."""
    try:
        return optuna.load_study(study_name=f"{drill.study_name}/{stage}", storage=drill._storage)
    except KeyError:
        return None
