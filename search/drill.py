"""`budgetnas drill`: from a parameter budget to a verified module, the course's drill-down automated.

    explore  the broad default space at a low fidelity chosen from the time budget; the
             baselines warm-started (shrunk to the budget where they exceed it)
    narrow   a space derived from Explore's best (space/derive.py, written out as TOML), at
             full fidelity, warm-started from Explore's best
    race     Narrow's top candidates on extra seeds, validation only (search/race.py); the
             pick is recorded on the drill before the test split is read
    verify   the pick, exported as a module, retrained by that module's recipe on all
             training images over `seeds` seeds and tested, as `budgetnas verify` does

All stages live in one Optuna storage: the studies NAME/explore and NAME/narrow, and the
drill's own study NAME, whose user attributes hold its config, time plan, clock, derived
space, race, choice and verify runs. Each is stored as soon as it exists, so the same command
after a crash (even `kill -9`) resumes: a finished training is never lost or repeated and a
finished stage never runs again. Files (space TOML, Arch JSON, module, verify JSON, notebook)
go to studies/NAME/.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import optuna
import torch

from budgetnas import baselines
from budgetnas.search import data as D
from budgetnas.search import race as R
from budgetnas.search.confirm import confirm_seed
from budgetnas.search.render import render
from budgetnas.search.runner import STUDIES, die_with_parent, load_data, run_workers
from budgetnas.search.select import completed, top_trials, val_acc
from budgetnas.search.storage import make_storage, redact
from budgetnas.search.study import StudyConfig, StudyError, check_name, open_study
from budgetnas.search.train import Engine, threads_each, train
from budgetnas.space import Arch, SpaceConfig, build, count_params, min_params, params_of, sample_arch, scale_to_budget
from budgetnas.space.derive import derive_space, to_toml

STAGES = ("explore", "narrow", "race", "verify")
KEY = "drill"  # the drill study's user attribute holding its fingerprint
EXPLORE_TRIALS = 60  # trainings Explore should afford; its fidelity is chosen so that it can
TIMED_SAMPLES = 3  # models drawn from the default space and timed for the plan: cost follows shape, not size
VERIFY_ENGINE_PRECISION = "fp32"  # verify trains as the exported module does: fp32, eager
FILL_EMA = 0.998  # the weight average of Narrow's filled warm starts (docs/design.md)
FILLED = "-filled"  # the stem suffix of a filled warm start's Arch JSON (explore-trialN-filled.json)
PRUNER = "median-by-schedule"  # a one-cycle run is judged against one-cycle runs (search/study.py)


@dataclass(frozen=True)
class DrillConfig:
    name: str  # its studies are NAME, NAME/explore, NAME/narrow; its files go to studies/NAME/
    budget: int  # hard limit on trainable parameters
    dataset: str = "mnist"  # mnist | fashion-mnist | kmnist, or a path: your own .npz, image folder or IDX folder
    data_dir: str | None = None  # data root; default $BUDGETNAS_DATA, else ./data
    hours: float = 1.0  # wall-clock budget of the whole drill, verify included
    bar: float | None = None  # test accuracy every one of the last 3 epochs of every seed must reach, %; None: no verdict
    seeds: int = 3  # verify seeds, 0..N-1
    epochs: int = 15  # full fidelity: training epochs of the recipe (Narrow, Race, Verify)
    subset: int | None = None  # full fidelity: training images (default: all but the validation split)
    val_size: int = 5000  # validation images held out from the training file; selection sees only these
    seed: int = 0  # sampler seed; training seeds derive from it
    storage: str | None = None  # Optuna storage URL; default journal:studies/NAME/drill.journal
    workers: int | None = None  # processes on this machine; default one per core

    def __post_init__(self):
        check_name(self.name)
        if "/" in self.name:
            raise StudyError(f"a drill's name names one folder under studies/ (no '/'), but got {self.name!r}.")
        if self.budget <= 0:
            raise StudyError(f"budget must be a positive number of parameters, but got {self.budget}.")
        if not self.hours > 0:
            raise StudyError(f"hours must be > 0, but got {self.hours}.")
        if self.seeds < 1 or self.epochs < 1:
            raise StudyError(f"seeds and epochs must be >= 1, but got {self.seeds} and {self.epochs}.")
        if self.bar is not None and not 0 < self.bar <= 100:
            raise StudyError(f"bar is a test accuracy in percent, in (0, 100], but got {self.bar}.")
        if self.workers is not None and self.workers < 1:
            raise StudyError(f"workers must be >= 1, but got {self.workers}.")
        smallest = min_params(SpaceConfig())
        if self.budget < smallest:
            raise StudyError(f"budget {self.budget} is below the smallest model in the default space ({smallest} params).")

    @property
    def folder(self) -> Path:
        return STUDIES / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"journal:{self.folder / 'drill.journal'}"

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def fingerprint(self) -> dict:
        """What must not change when a drill is resumed (time, workers and paths may)."""
        keep = ("budget", "dataset", "bar", "seeds", "epochs", "subset", "val_size", "seed")
        return {k: getattr(self, k) for k in keep}


# ----------------------------------------------------------------------------- clock and plan
class Clock:
    """Seconds the drill has run, over all its invocations; stored every `every` s and at each stage's
    end, so a killed drill loses at most that much of its account."""

    def __init__(self, study: optuna.Study, every: float = 15.0):
        self.study, self.base, self.t0 = study, study.user_attrs.get("spent", 0.0), time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(every,), daemon=True)
        self._thread.start()

    def now(self) -> float:
        return self.base + time.monotonic() - self.t0

    def save(self) -> None:
        self.study.set_user_attr("spent", self.now())

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            self.save()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.save()


def seconds_per_image(arch: Arch, data: D.Data, engine: Engine, images: int = 2000) -> float:
    """Training seconds per image-epoch of `arch` with `engine`: the second of two short epochs
    (the first pays one-off start-up costs)."""
    n = min(images, len(data.train))
    part = replace(data, train=D.Split(data.train.images[:n], data.train.labels[:n]), val=None)
    history = train(partial(build, arch), replace(arch.recipe, epochs=2), part, engine=engine, progress=False)
    return history[-1]["seconds"] / n


def typical_archs(budget: int, data: D.Data, k: int, seed: int) -> list[Arch]:
    """`k` models of the default space within the budget, drawn at random (seeded): what Explore trains."""
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(1000 * k):
        try:
            arch = data.shaped(sample_arch(draw.ask(), SpaceConfig()))
            fits = count_params(arch) <= budget
        except ValueError:  # a shape the image cannot hold (BadInput is one): not a model Explore trains
            continue
        if fits:
            out.append(arch)
            if len(out) == k:
                break
    return out


def plan(cfg: DrillConfig, n_train: int, n_full: int, sec_search: float, sec_verify: float) -> dict:
    """Each stage's end on the drill's clock (seconds) and Explore's fidelity.

    Verify and Race are costed first (they are fixed by the seeds), Explore and Narrow share what
    is left 2:3, and Explore's fidelity is cut so that it affords EXPLORE_TRIALS trainings."""
    w = cfg.n_workers
    full = cfg.epochs * n_train * sec_search  # one full-fidelity training, one worker
    verify = math.ceil(cfg.seeds / w) * cfg.epochs * n_full * sec_verify
    race = R.rounds(w) * full
    total = cfg.hours * 3600
    short = total - verify - race < 0.3 * total
    left = max(total - verify - race, 0.3 * total)  # too little time: Explore and Narrow keep 30%, Race shrinks
    race = max(0.0, min(race, total - verify - left))
    explore, narrow = 0.4 * left, 0.6 * left
    ratio = min(0.25, explore * w / EXPLORE_TRIALS / full) if full > 0 else 0.25  # Explore's cost per training
    epochs = max(min(2, cfg.epochs), min(cfg.epochs, round(cfg.epochs * math.sqrt(ratio))))
    images = max(min(1000, n_train), min(n_train, int(n_train * ratio * cfg.epochs / epochs)))
    return {"explore_end": explore, "narrow_end": explore + narrow, "race_end": explore + narrow + race,
            "explore_epochs": epochs, "explore_images": images, "full_training_s": full, "verify_s": verify,
            "explore_training_s": epochs * images * sec_search,
            "sec_per_image": sec_search, "sec_per_image_verify": sec_verify,
            "short": short}


def full_training_from(histories: list[list[dict]], images: int, epochs: int, n_train: float) -> float | None:
    """Seconds of one full-fidelity training, from trainings of `images` images an epoch: a start-up
    (the first epoch's excess: compilation, first kernels) plus the steady seconds an image, each
    the median over trainings. A per-trial average would charge a pruned trial's start-up to its
    one or two epochs and overcost full trainings 2-3x (mnist-drill-7k-2). None without two epochs."""
    steady = [statistics.median(h["seconds"] for h in hist[1:]) for hist in histories if len(hist) >= 2]
    if not steady:
        return None
    startup = [max(0.0, hist[0]["seconds"] - s) for hist, s in zip((h for h in histories if len(h) >= 2), steady)]
    return statistics.median(startup) + epochs * n_train * statistics.median(steady) / images


def replan(p: dict, cfg: DrillConfig, stage: str, now: float, full_s: float) -> dict:
    """The plan with the ends still ahead moved by a measured full-fidelity training of `full_s` s
    (one worker): Verify reserved at that cost, then Race, but never more than half of what is
    left after Verify (mnist-drill-7k-2: the race's six trainings left Narrow one round), and the
    stage starting now given the rest, at least one training per worker."""
    total = cfg.hours * 3600
    planned = p.get("verify_planned_s", p["verify_s"])  # the first plan's, scaled once (not an earlier re-plan's again)
    verify = planned * full_s / p["full_training_s"]
    race = R.rounds(cfg.n_workers) * full_s
    race = min(race, max(full_s, 0.5 * (total - verify - now)))
    q = {**p, "verify_s": verify, "verify_planned_s": planned, "measured": {**p.get("measured", {}), stage: full_s}}
    if stage == "narrow":
        q["narrow_end"] = max(now + full_s, total - verify - race)
    q["race_end"] = max(q["narrow_end"], now if stage == "race" else 0.0, total - verify)
    return q


# ----------------------------------------------------------------------------- warm starts
def filled(arch: Arch, budget: int) -> Arch:
    """Explore's pick as Narrow starts from it: widened to fill the budget (Explore's low fidelity
    favours small, fast-converging models: the three 7k drills picked 5,404-5,608 of 7,000
    parameters, both models that pass use 6,960-7,570) and with the weight average on, which
    costs no parameter (docs/design.md; +0.03 point min last-3 test on mnist-7k's trial 16)."""
    return (scale_to_budget(arch, budget) or arch).with_recipe(ema=FILL_EMA)


def warm_files(cfg: DrillConfig, data: D.Data) -> tuple[str, ...]:
    """The baselines that exceed the budget on this data, shrunk to it, as Arch JSON files (those
    that fit are enqueued by the study itself; those the image cannot take are left out)."""
    out = []
    for b in baselines.all_baselines():
        try:
            arch = data.shaped(b.arch)
        except ValueError:
            continue
        if count_params(arch) <= cfg.budget:
            continue
        small = scale_to_budget(arch, cfg.budget)
        if small is not None:
            path = cfg.folder / f"warm-{b.name}-shrunk.json"
            path.write_text(small.to_json() + "\n")
            out.append(str(path))
    return tuple(out)


# ----------------------------------------------------------------------------- progress
@dataclass(frozen=True)
class StageProgress:
    """After each trial: the stage, trainings done and planned, time left (picklable, for workers)."""

    stage: str
    planned: int
    stage_deadline: float  # time.time() at which the stage stops starting trials
    drill_deadline: float  # time.time() at which the drill's hours are spent
    hours: float

    def __call__(self, study: optuna.Study, trial) -> None:
        if not trial.user_attrs.get("history"):  # pruned before training (over the budget): nothing moved
            return
        trained = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("history"))
        now = time.time()
        print(f"[{self.stage}] {trained} trained of ~{self.planned} planned; stage {max(0, self.stage_deadline - now) / 60:.1f} "
              f"min left, drill {max(0, self.drill_deadline - now) / 60:.1f} min left of {self.hours:g} h", flush=True)


# ----------------------------------------------------------------------------- the drill
class Drill:
    def __init__(self, cfg: DrillConfig, engine: Engine = Engine(), log=print):
        self.cfg, self.engine, self.log = cfg, engine, log
        cfg.folder.mkdir(parents=True, exist_ok=True)
        self.storage = make_storage(cfg.storage_url)
        self.study = optuna.create_study(study_name=cfg.name, storage=self.storage, load_if_exists=True)
        old = self.study.user_attrs.get(KEY)
        if old is None:
            if self.study.trials:
                raise StudyError(f"study {cfg.name!r} exists in {redact(cfg.storage_url)} and is not a drill.")
            self.study.set_user_attr(KEY, cfg.fingerprint())
            self.study.set_user_attr("config", {**asdict(cfg), "storage": redact(cfg.storage)})
        elif old != cfg.fingerprint():
            changed = "; ".join(f"{k}: was {old.get(k)!r}, now {v!r}" for k, v in cfg.fingerprint().items()
                                if old.get(k) != v)
            raise StudyError(f"drill {cfg.name!r} was started with other settings ({changed}); "
                             "use a new --name or the original settings.")

    # -- state stored on the drill's study
    def get(self, key: str, default=None):
        return self.study.user_attrs.get(key, default)

    def put(self, key: str, value) -> None:
        self.study.set_user_attr(key, json.loads(json.dumps(value)))  # user_attrs reads the storage: no reload

    def done(self, stage: str) -> bool:
        return stage in self.get("done", [])

    def mark_done(self, stage: str) -> None:
        self.clock.save()
        self.put("done", [*self.get("done", []), stage])
        self.log(f"[{stage}] done at {self.clock.now() / 60:.1f} min of {self.cfg.hours * 60:.1f}")

    def stage_cfg(self, stage: str, **kw) -> StudyConfig:
        c = self.cfg
        return StudyConfig(name=f"{c.name}/{stage}", budget=c.budget, trials=1_000_000, dataset=c.dataset,
                           data_dir=c.data_dir, val_size=c.val_size, seed=c.seed, storage=c.storage_url,
                           pruner=PRUNER, **kw)

    # -- the stages
    def run(self) -> dict:
        self.clock = Clock(self.study)
        try:
            if self.get("plan") is None:
                self.make_plan()
            p = self.get("plan")
            if p["short"]:
                self.log(f"drill: warning: {self.cfg.hours:g} h does not cover Race and Verify at full fidelity "
                         f"(a training takes about {p['full_training_s'] / 60:.1f} min here); every stage gets its minimum.")
            for stage in STAGES:
                if not self.done(stage):
                    self.log(f"[{stage}] starting at {self.clock.now() / 60:.1f} min of {self.cfg.hours * 60:.1f}")
                    getattr(self, stage)()
                    self.mark_done(stage)
        finally:
            self.clock.close()
        from budgetnas.search.notebook import write_drill_report

        self.log(f"wrote {write_drill_report(self.study, self.cfg.folder)}")
        return self.get("verify")

    def make_plan(self) -> None:
        c = self.cfg
        data = load_data(self.stage_cfg("explore"))  # validation held out; no test split read
        n_file = len(data.train) + c.val_size
        n_train = min(c.subset or len(data.train), len(data.train))
        warm = [Arch.from_json(Path(f).read_text()) for f in warm_files(c, data)]
        # the largest warm start alone under-costed Explore 1.3-5x (mnist-drill-7k): sampled models have other shapes
        models = sorted(warm, key=count_params)[-1:] + typical_archs(c.budget, data, TIMED_SAMPLES, c.seed)
        if not models:
            raise StudyError(f"no model of the default space has at most {c.budget:,} parameters on this data.")
        timed = [seconds_per_image(a, data, self.engine) for a in models]
        sec_search = sum(timed) / len(timed)
        certify = Engine(self.engine.device, VERIFY_ENGINE_PRECISION, "off")
        sec_verify = sec_search * seconds_per_image(models[0], data, certify) / timed[0]
        p = plan(c, n_train, n_file, sec_search, sec_verify)
        self.put("plan", p)
        self.log(f"drill: plan for {c.hours:g} h on {c.n_workers} worker(s): explore at {p['explore_epochs']} epochs x "
                 f"{p['explore_images']:,} images until {p['explore_end'] / 60:.1f} min, narrow at {c.epochs} epochs "
                 f"x {n_train:,} images until {p['narrow_end'] / 60:.1f}, race until {p['race_end'] / 60:.1f}, then "
                 f"verify (about {p['verify_s'] / 60:.1f} min); one full training about {p['full_training_s'] / 60:.1f} min")

    def _run_study(self, cfg: StudyConfig, start: float, end: float, training_s: float) -> optuna.Study:
        """The stage from `start` to `end` on the clock, planned in trainings of `training_s` seconds:
        trials while one can still end by `end` (Optuna's timeout only stops trials from starting:
        mnist-drill-7k-6's last Narrow trial began 14 s before its end and took the race's 13
        minutes); then, while none has completed, one more per worker (ten rounds at most: a stage
        that completes nothing has nothing to hand on)."""
        left = end - training_s - self.clock.now()
        planned = max(1, round((end - start) * self.cfg.n_workers / max(1e-9, training_s)))
        for attempt in range(11):
            progress = StageProgress(cfg.name, planned, time.time() + max(0.0, left),
                                     time.time() + self.cfg.hours * 3600 - self.clock.now(), self.cfg.hours)
            if left > 0 or attempt > 0:
                study = run_workers(replace(cfg, timeout=left if left > 0 else None), self.cfg.workers, self.engine,
                                    (progress,))
            else:
                study = open_study(cfg, storage=make_storage(cfg.storage_url))
            if completed(study):
                return study
            self.log(f"[{cfg.name}] no trial has completed yet; one more per worker")
            cfg, left = replace(cfg, trials=self.cfg.n_workers), 0.0
        raise StudyError(f"{cfg.name}: no trial completed; the space or the data does not train (see its trials).")

    def explore(self) -> None:
        p = self.get("plan")
        cfg = self.stage_cfg("explore", epochs=p["explore_epochs"], subset=p["explore_images"], space=SpaceConfig())
        cfg = replace(cfg, warm_from=warm_files(self.cfg, load_data(cfg)))
        self._run_study(cfg, 0.0, p["explore_end"], training_s=p["explore_training_s"])

    def measure(self, stage: str, full_s: float) -> dict:
        """Re-plan once, as `stage` starts, from what trainings really took."""
        p = self.get("plan")
        if stage not in p.get("measured", {}):
            p = replan(p, self.cfg, stage, self.clock.now(), full_s)
            self.put("plan", p)
            self.log(f"[{stage}] measured: one full training about {full_s / 60:.1f} min; {stage} until "
                     f"{p[stage + '_end'] / 60:.1f} min, verify about {p['verify_s'] / 60:.1f} min")
        return p

    def narrow(self) -> None:
        explore, p = self.load("explore"), self.get("plan")
        n_train = p["full_training_s"] / (self.cfg.epochs * p["sec_per_image"])
        full = full_training_from([t.user_attrs["history"] for t in explore.get_trials(deepcopy=False)
                                   if t.user_attrs.get("history")], p["explore_images"], self.cfg.epochs, n_train)
        if full is not None:
            p = self.measure("narrow", full)
        if self.get("space") is None:
            top = top_trials(explore, max(3, min(8, math.ceil(0.2 * len(completed(explore))))))
            paths, extra = [], []
            for t in top[:3]:
                # filled only: Narrow fills every model, and the filled beat the plain on validation in
                # each of mnist-drill-7k-4's three pairs
                wide = filled(Arch.from_dict(t.user_attrs["arch"]), self.cfg.budget)
                path = self.cfg.folder / f"explore-trial{t.number}{FILLED}.json"
                path.write_text(wide.to_json() + "\n")
                paths.append(str(path))
                extra.append(params_of(wide))
            # the space holds the filled variants too (their widths, the weight average), or they would be clamped back
            space = derive_space(SpaceConfig(), [t.params for t in top] + extra)
            note = (f"Derived by `budgetnas drill` from the {len(top)} best of {len(completed(explore))} completed "
                    f"Explore trials ({', '.join(str(t.number) for t in top)}) and the best three filled to the budget:\n"
                    "what they agree on is fixed, numbers span what they used plus a margin (twice it where the best "
                    "sits on the edge).")
            (self.cfg.folder / "narrow-space.toml").write_text(to_toml(space, note))
            self.put("space", {"space": space.to_dict(), "from": [t.number for t in top], "warm": paths})
        got = self.get("space")
        # every sample filled to the budget: a deeper model is compared at the budget, not pruned over it
        # (mnist-drill-7k-5's four 4-conv samples were all over it) nor left short of it
        cfg = self.stage_cfg("narrow", epochs=self.cfg.epochs, subset=self.cfg.subset, warm_start=True, fill=True,
                             warm_from=tuple(got["warm"]), space=SpaceConfig.from_dict(got["space"]))
        training = p.get("measured", {}).get("narrow", p["full_training_s"])  # the re-plan's, if Explore measured one
        self._run_study(cfg, p["explore_end"], p["narrow_end"], training_s=training)

    def race(self) -> None:
        c = self.cfg
        narrow = self.load("narrow")
        first = sorted((R.Runner(t.number, t.user_attrs["params"], [R.seed_score(val_accs(t))])
                        for t in completed(narrow)), key=lambda r: (-r.scores[0], r.params))
        entrants = first[:R.candidates(c.n_workers)]
        took = [t.user_attrs["seconds"] for t in completed(narrow) if t.number in {r.number for r in entrants}]
        p = self.measure("race", sum(took) / len(took))
        state = self.get("race") or {"runners": [r.to_dict() for r in entrants], "dropped": {}, "seconds": []}
        self.put("race", state)
        tie = 100.0 / c.val_size  # one validation image
        data_cfg = self.stage_cfg("narrow", epochs=c.epochs, subset=c.subset)
        trials = {t.number: t for t in narrow.get_trials(deepcopy=False)}
        jobs = min(c.n_workers, len(state["runners"]))  # a round's trainings run side by side
        pool = (ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)
                if jobs > 1 else None)
        try:
            while True:
                runners = [R.Runner(**r) for r in state["runners"]]
                alive = [r for r in runners if str(r.number) not in state["dropped"]]
                why = R.finished(alive, R.MAX_SEEDS)
                if why:
                    break
                n = min(len(r.scores) for r in alive)
                batch = [r for r in alive if len(r.scores) == n][:jobs]
                need = max(trials[r.number].user_attrs.get("seconds", p["full_training_s"]) for r in batch)
                if self.clock.now() + need > p["race_end"]:
                    why = "time"
                    break
                args = {r.number: (data_cfg, trials[r.number].user_attrs["arch"], confirm_seed(r.number, n), self.engine,
                                   threads_each(len(batch)) if pool else torch.get_num_threads()) for r in batch}
                if pool is None:  # one at a time, each kept as it ends
                    outcomes = ((number, race_seed(*a)) for number, a in args.items())
                else:
                    futures = {pool.submit(race_seed, *a): number for number, a in args.items()}
                    outcomes = ((futures[f], f.result()) for f in as_completed(futures))
                for number, (score, seconds) in outcomes:
                    for d in state["runners"]:
                        if d["number"] == number:
                            d["scores"].append(score)
                    state["seconds"].append(seconds)
                    self.log(f"[race] trial {number} seed {args[number][2]}: worst of last {R.LAST} val {score:.2f}%  "
                             f"({seconds / 60:.1f} min)")
                    runners = [R.Runner(**d) for d in state["runners"]]
                    alive = [x for x in runners if str(x.number) not in state["dropped"]]
                    if len({len(x.scores) for x in alive}) == 1:  # a round is complete: test
                        kept = {x.number for x in R.survivors(alive, tie)}
                        for x in alive:
                            if x.number not in kept:
                                state["dropped"][str(x.number)] = len(x.scores)
                                self.log(f"[race] trial {x.number} dropped after {len(x.scores)} seeds")
                    self.put("race", state)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        runners = [R.Runner(**d) for d in state["runners"]]
        alive = [r for r in runners if str(r.number) not in state["dropped"]]
        chosen = R.pick(alive, tie)
        t = trials[chosen.number]
        arch = Arch.from_dict(t.user_attrs["arch"]).with_recipe(epochs=c.epochs)
        state["ended"] = why
        self.put("race", state)
        # the choice is stored before the test split is read (Verify), by the rule in search/race.py
        self.put("choice", {"trial": chosen.number, "params": chosen.params, "scores": chosen.scores,
                            "statistic": R.statistic(chosen.scores), "ended": why, "arch": arch.to_dict()})
        self.log(f"[race] ended ({why}); pick: trial {chosen.number}, {chosen.params:,} params, scores "
                 f"{' '.join(f'{s:.2f}' for s in chosen.scores)}")

    def verify(self) -> None:
        from budgetnas.search.results import provenance, write_json
        from budgetnas.search.verify import _one_seed, fit_to, load_candidate, summarise_run, verdict, verdict_line

        c, choice = self.cfg, self.get("choice")
        arch = Arch.from_dict(choice["arch"])
        module, arch_json = c.folder / "best.py", c.folder / "best.json"
        arch_json.write_text(arch.to_json() + "\n")
        module.write_text(render(arch, {
            "Drill": f"{c.name}, Narrow trial {choice['trial']}, picked by the race",
            "Budget": f"{c.budget} params; this model has {choice['params']}",
            "Race": f"validation, worst of the last {R.LAST} epochs per seed: "
                    f"{' '.join(f'{s:.2f}' for s in choice['scores'])}%",
        }))
        engine = Engine(self.engine.device, VERIFY_ENGINE_PRECISION, "off")
        runs = {int(k): v for k, v in self.get("verify_runs", {}).items()}
        todo = [s for s in range(c.seeds) if s not in runs]
        self.log(f"[verify] {module}: {count_params(arch):,} params, seeds {todo} of {c.seeds} to train")
        source = (str(module), c.dataset, c.data_dir)

        def keep(summary: dict) -> None:
            runs[summary["seed"]] = summary
            self.put("verify_runs", {str(k): v for k, v in runs.items()})

        if todo:
            data = D.load(c.dataset, c.data_dir, val_size=0)  # the test split: first read here
            jobs = min(c.n_workers, len(todo))
            if jobs == 1:
                cand = fit_to(load_candidate(str(module)), data)
                for s in todo:
                    keep(summarise_run(cand, data, s, None, engine))
            else:
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=die_with_parent) as pool:
                    futures = [pool.submit(_one_seed, source, s, None, engine, threads_each(jobs)) for s in todo]
                    for f in as_completed(futures):
                        keep(f.result())
        summaries = [runs[s] for s in range(c.seeds)]
        v = verdict(summaries, c.bar)
        result = {"target": str(module), "verdict": v, "runs": summaries, **provenance(engine)}
        write_json(c.folder / "verify.json", result)
        self.put("verify", {"verdict": v, "params": count_params(arch)})
        self.log(f"[verify] {verdict_line(v, count_params(arch))}")

    def load(self, stage: str) -> optuna.Study:
        return stage_study(self.study, stage)


def race_seed(data_cfg: StudyConfig, arch: dict, seed: int, engine: Engine, threads: int) -> tuple[float, float]:
    """One extra seed of a race candidate on validation: (its seed score, seconds). Loads the data
    itself, so that it can run in a worker process."""
    torch.set_num_threads(threads)
    data, model = load_data(data_cfg), Arch.from_dict(arch)
    t0 = time.perf_counter()
    history = train(partial(build, model), model.recipe, data, seed=seed, engine=engine, progress=False)
    return R.seed_score([h["val_acc"] for h in history]), time.perf_counter() - t0


def stage_study(drill: optuna.Study, stage: str) -> optuna.Study | None:
    """The study of one of a drill's stages (NAME/stage) in the drill's storage; None before it exists."""
    try:
        return optuna.load_study(study_name=f"{drill.study_name}/{stage}", storage=drill._storage)
    except KeyError:
        return None


def val_accs(trial) -> list[float]:
    return [h["val_acc"] for h in trial.user_attrs["history"]]


def drill_summary(study: optuna.Study) -> str:
    """`budgetnas status` of a drill: each stage, its trainings, the plan and the outcome."""
    a = study.user_attrs
    cfg, done = a.get("config", {}), a.get("done", [])
    lines = [(f"drill {study.study_name}: budget {cfg.get('budget')} params, {cfg.get('dataset')}, "
              f"{a.get('spent', 0) / 60:.1f} of {cfg.get('hours', 0) * 60:.1f} min spent")]
    for stage in STAGES:
        state = "done" if stage in done else "pending"
        extra = ""
        if stage in ("explore", "narrow"):
            s = stage_study(study, stage)
            if s is not None:
                trained = sum(1 for t in s.get_trials(deepcopy=False) if t.user_attrs.get("history"))
                best = top_trials(s, 1)
                extra = f"{len(s.trials)} trials, {trained} trained" + (
                    f", best trial {best[0].number}: {best[0].user_attrs['params']:,} params, val {val_acc(best[0]):.2f}%"
                    if best else "")
                state = state if state == "done" else "running"
        elif stage == "race" and a.get("race"):
            r = a["race"]
            extra = f"{sum(len(x['scores']) - 1 for x in r['runners'])} extra trainings of {len(r['runners'])} candidates"
            if a.get("choice"):
                ch = a["choice"]
                extra += f"; pick trial {ch['trial']}, {ch['params']:,} params"
        elif stage == "verify" and (a.get("verify_runs") or a.get("verify")):
            v = a.get("verify")
            extra = f"{len(a.get('verify_runs', {}))} of {cfg.get('seeds')} seeds trained"
            if v:
                from budgetnas.search.verify import verdict_line

                extra += "; " + verdict_line(v["verdict"], v["params"])
        lines.append(f"  {stage:8s} {state:8s} {extra}")
    return "\n".join(lines)
