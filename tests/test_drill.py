"""The drill: each stage, the derived space, the race's rules (no training), resume after SIGKILL,
and the test split left unread until Verify."""

import json
import math
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import tomllib
import torch
from filelock import FileLock

from budgetnas import baselines
from budgetnas.search.drill import plan as plan_module
from budgetnas.search.drill import racing as R
from budgetnas.search.drill import run as drill_module
from budgetnas.search.drill import stage as stage_module
from budgetnas.search.drill.clock import Clock
from budgetnas.search.drill.config import DrillConfig
from budgetnas.search.drill.plan import full_training_from, least_s, plan, replan, typical_archs
from budgetnas.search.drill.race import race, val_accs
from budgetnas.search.drill.run import Drill
from budgetnas.search.drill.state import Race
from budgetnas.search.drill.warm import FILL_EMA, filled
from budgetnas.search.engine import data as D
from budgetnas.search.engine.train import threads_each
from budgetnas.search.report.notebook import write_drill_report
from budgetnas.search.study.config import StudyError, check_name
from budgetnas.search.study.curves import VALIDATION_KEY
from budgetnas.search.study.storage import make_storage
from budgetnas.space import Arch, SpaceConfig, count_params, scale_to_budget
from budgetnas.space.derive import derive_space, knob_values, to_toml
from tests.conftest import filled_sample, run_drill, write_idx_dataset, write_npz

# ----------------------------------------------------------------------------- derived space
BEST = {"stages": 2, "s0_convs": 2, "s0_c0": 8, "s0_c1": 12, "s0_padded": 1, "s1_transition": True, "s1_t": 10,
        "s1_convs": 3, "s1_c0": 14, "s1_c1": 16, "s1_c2": 20, "s1_padded": 0, "s1_separable": False, "bn": True,
        "dropout": 0.0, "head": "gap", "schedule": "onecycle", "optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0,
        "batch_size": 128, "rotate": 5.0, "translate": 0.05, "ema": 0.0}
SECOND = {**BEST, "s1_convs": 2, "s1_c0": 12, "s1_c1": 14, "lr": 0.05, "rotate": 10.0, "batch_size": 64,
          "head": "gap", "weight_decay": 1e-4}
SECOND.pop("s1_c2")


def test_knob_values_maps_trial_params_to_space_knobs():
    v = knob_values(BEST)
    assert sorted(v["channels"]) == [8, 10, 12, 14, 16, 20]
    assert v["convs"] == [2, 3] and v["transition"] == [True] and "s0_padded" not in v and "padded" not in v


def test_derived_space_fixes_what_the_best_agree_on_and_spans_the_rest():
    space = derive_space(SpaceConfig(), [BEST, SECOND])
    assert space.bn == (True,) and space.head == ("gap",) and space.optimizer == ("sgd",)
    assert space.schedule == ("onecycle",) and space.transition == (True,) and space.stages == (2, 2)
    assert space.dropout == (0.0, 0.0)  # both used none: fixed
    assert space.batch_size == (64, 128) and space.weight_decay == (0.0, 1e-4)  # disagree: both kept
    assert space.convs == (2, 4)  # structure: the span used, and one conv more since the best is deepest
    assert space.channels == (2, 28)  # 8..20 used, both ends by the best: 2 x 4 a side, limited by the grid from 8
    assert space.lr == pytest.approx((0.04, 0.156), rel=0.01)  # log margin; twice on the best's (top) edge
    assert space.rotate == (0.0, 12.5)  # the best sits on the low edge: twice the margin there


def test_derived_space_tries_a_deeper_stage_only_where_the_best_is_deepest():
    agreed = derive_space(SpaceConfig(), [BEST, {**BEST, "lr": 0.05}])  # both use 2 and 3 convs
    assert agreed.convs == (2, 4) and agreed.stages == (2, 2)  # stages: agreed, never widened
    shallower = {**BEST, "s1_convs": 2}
    shallower.pop("s1_c2")
    assert derive_space(SpaceConfig(), [shallower, BEST]).convs == (2, 3)  # the deepest is not the best
    deepest = {**BEST, "s0_convs": 8, **{f"s0_c{i}": 8 for i in range(8)}}
    assert derive_space(SpaceConfig(), [deepest]).convs == (3, 8)  # at the limit: not past it


def test_derived_space_stays_within_meaningful_limits_and_on_the_grid():
    wide = {**BEST, "rotate": 15.0, "translate": 0.1, "dropout": 0.2}
    space = derive_space(SpaceConfig(), [wide, {**wide, "rotate": 12.5, "translate": 0.0, "dropout": 0.1}])
    assert 15.0 < space.rotate[1] <= 45.0 and space.translate[0] == 0.0 and space.dropout[1] <= 0.5
    assert all(round(x / 2.5, 9).is_integer() for x in space.rotate)


def test_derived_space_toml_reads_back_as_the_same_space():
    space = derive_space(SpaceConfig(), [BEST, SECOND])
    text = to_toml(space, "a note\nover two lines")
    assert text.startswith("# a note\n# over two lines\n[space]\n")
    assert SpaceConfig.from_dict(tomllib.loads(text)["space"]) == space


def test_derived_space_keeps_a_choice_the_broad_space_did_not_offer():
    space = derive_space(SpaceConfig(), [BEST, {**SECOND, "ema": 0.998}])  # the default space offers ema 0 only
    assert space.ema == (0.0, 0.998)


def test_derive_needs_a_trial():
    with pytest.raises(ValueError, match="at least one trial"):
        derive_space(SpaceConfig(), [])


# ----------------------------------------------------------------------------- race (scripted scores)
def test_statistic_rewards_consistency_over_seeds():
    steady, lucky = [99.30, 99.31, 99.29], [99.70, 99.05, 99.30]
    assert statistics.mean(lucky) > statistics.mean(steady)  # the luckiest draw and the best mean...
    assert R.statistic(steady) > R.statistic(lucky)  # ...lose to the consistent one


def test_seed_score_is_the_worst_of_the_last_three_epochs():
    assert R.seed_score([90.0, 99.5, 99.2, 99.4]) == 99.2


def test_a_candidate_clearly_behind_is_dropped_and_a_close_one_kept():
    lead = R.Runner(1, 5000, [99.40, 99.42])
    close = R.Runner(2, 4000, [99.38, 99.41])
    far = R.Runner(3, 3000, [99.00, 98.98])
    kept = {r.number for r in R.survivors([lead, close, far], tie=0.02)}
    assert kept == {1, 2}


def test_no_one_is_dropped_on_one_seed():
    runners = [R.Runner(1, 5000, [99.4]), R.Runner(2, 5000, [95.0])]
    assert R.survivors(runners, tie=0.02) == runners


def test_race_finishes_when_separated_decided_or_out_of_seeds():
    assert R.finished([R.Runner(1, 1, [99.0])]) == "separated"
    assert R.finished([R.Runner(1, 1, [99.0]), R.Runner(2, 1, [99.1])]) is None  # under MIN_SEEDS
    clear = [R.Runner(1, 1, [99.40, 99.42, 99.41]), R.Runner(2, 1, [99.10, 99.12, 99.11])]
    assert not R.undecided(clear) and R.finished(clear) == "decided"  # lead 0.30, error 0.006
    assert R.finished(clear, bar=99.0) == "decided"  # the leader far above the bar too
    assert R.undecided(clear, bar=99.40) and R.finished(clear, bar=99.40) is None  # on the bar: one more seed
    close = [R.Runner(1, 1, [99.40, 99.50, 99.45]), R.Runner(2, 1, [99.38, 99.46, 99.42])]
    assert R.undecided(close) and R.finished(close) is None  # lead 0.05, error 0.03: one more seed
    at_cap = [R.Runner(n, 1, close[n - 1].scores * 2) for n in (1, 2)]
    assert R.finished(at_cap) == "seeds" and len(at_cap[0].scores) == R.MAX_SEEDS


def test_a_race_round_is_costed_a_wave_of_workers_at_a_time():
    """Three runners on two workers train in two waves: a round costed as one training started
    rounds that ran into Verify's share."""
    assert R.round_seconds([300.0, 200.0, 250.0], workers=2) == 600.0
    assert R.round_seconds([300.0, 200.0], workers=2) == 300.0
    assert R.round_seconds([300.0, 200.0, 250.0], workers=8) == 300.0


def test_the_race_interval_is_the_mean_and_its_standard_error():
    low, high = R.interval([99.40, 99.50, 99.45])
    assert (low + high) / 2 == pytest.approx(99.45) and high - low == pytest.approx(2 * 1.96 * 0.05 / math.sqrt(3))


def test_pick_takes_the_best_statistic_and_a_tie_goes_to_fewer_parameters():
    big, small = R.Runner(1, 6000, [99.40, 99.40]), R.Runner(2, 4000, [99.39, 99.40])
    assert R.pick([big, small], tie=0.02).number == 2  # within one image: the smaller wins
    assert R.pick([big, small], tie=0.001).number == 1
    assert R.pick([R.Runner(1, 9000, [99.5, 99.5]), small], tie=0.02).number == 1


@pytest.mark.parametrize("workers, entrants", [(1, 3), (2, 3), (6, 6), (12, 8)])
def test_as_many_enter_the_race_as_a_round_can_train_side_by_side(workers, entrants):
    assert R.candidates(workers) == entrants
    cfg = DrillConfig(name="p", budget=7000, hours=2.0, workers=workers)
    p = plan(cfg, n_train=55000, n_full=60000, sec_search=2.5e-4, sec_verify=4.5e-4)
    waves = (p.race_end - p.narrow_end) / p.full_training_s  # each wave one training per worker
    assert waves == pytest.approx((R.MIN_SEEDS - 1) * math.ceil(entrants / workers))  # a round: 3 on 2 workers is 2 waves


# ----------------------------------------------------------------------------- plan and warm starts
def test_plan_keeps_every_stage_inside_the_hours_and_lowers_explores_fidelity():
    cfg = DrillConfig(name="p", budget=7000, hours=2.0, workers=1)
    p = plan(cfg, n_train=55000, n_full=60000, sec_search=2.5e-4, sec_verify=4.5e-4)
    assert 0 < p.explore_end < p.narrow_end < p.race_end < 2 * 3600
    assert p.race_end + p.verify_s <= 2 * 3600 + 1
    assert p.explore_training_s < p.full_training_s / 3 and not p.short
    tiny = plan(DrillConfig(name="p", budget=7000, hours=0.1, workers=1), 55000, 60000, 2.5e-4, 4.5e-4)
    assert tiny.short and tiny.explore_end > 0


def test_a_slower_training_than_planned_moves_the_later_stages_and_keeps_verify_inside_the_hours():
    cfg = DrillConfig(name="p", budget=7000, hours=2.0, workers=2)
    p = plan(cfg, n_train=55000, n_full=60000, sec_search=2.5e-4, sec_verify=4.5e-4)
    slow = replan(p, cfg, "narrow", now=p.explore_end, full_s=3 * p.full_training_s)
    assert slow.verify_s == pytest.approx(3 * p.verify_s)
    assert p.explore_end < slow.narrow_end < p.narrow_end and slow.race_end < p.race_end
    assert slow.race_end + slow.verify_s == pytest.approx(2 * 3600)
    late = replan(p, cfg, "narrow", now=6000.0, full_s=p.full_training_s)  # Narrow keeps one training
    assert late.narrow_end == pytest.approx(6000.0 + p.full_training_s)
    squeezed = replan(p, cfg, "narrow", now=0.5 * 3600, full_s=10 * 60.0)  # a race of 3 rounds would leave Narrow 15 min
    assert squeezed.narrow_end - 1800 >= squeezed.race_end - squeezed.narrow_end  # Race takes at most half
    again = replan(slow, cfg, "race", now=slow.narrow_end, full_s=3 * p.full_training_s)
    assert again.verify_s == pytest.approx(slow.verify_s)  # a second re-plan at the same cost changes nothing
    assert again.race_end == pytest.approx(slow.race_end)  # (mnist-drill-7k-2 scaled Verify twice: no race)
    race = replan(slow, cfg, "race", now=slow.narrow_end, full_s=p.full_training_s)
    assert race.narrow_end == slow.narrow_end and set(race.measured) == {"narrow", "race"}


def test_a_full_training_is_costed_from_steady_epochs_plus_a_start_up():
    def hist(first, steady, n):
        return [{"seconds": first}] + [{"seconds": steady}] * (n - 1)

    pruned, done = hist(40.0, 10.0, 2), hist(40.0, 10.0, 8)  # 30 s of start-up, 10 s an epoch of 1,000 images
    full = full_training_from([pruned, pruned, done, [{"seconds": 5.0}]], images=1000, epochs=15, n_train=5000)
    assert full == pytest.approx(30.0 + 15 * 50.0)  # not the per-trial average, which the start-up inflates
    assert full_training_from([[{"seconds": 5.0}]], 1000, 15, 5000) is None


def test_a_stage_starts_no_training_that_cannot_end_in_its_time(tmp_path, monkeypatch, data_root):
    """Optuna's timeout only stops trials from starting, so a stage's is its end less one training."""
    monkeypatch.chdir(tmp_path)
    drill = Drill(DrillConfig(name="t", budget=5000, workers=1, data_dir=str(data_root), val_size=200), log=lambda line: None)
    drill.clock = type("Clock", (), {"now": lambda self: 600.0})()
    done = optuna.create_study(direction="maximize")
    done.add_trial(optuna.trial.create_trial(value=99.0))
    timeouts = []

    def run_workers(cfg, workers, engine, callbacks):
        timeouts.append(cfg.timeout)
        return done

    monkeypatch.setattr(stage_module, "run_workers", run_workers)
    cfg = drill.cfg.stage("narrow")
    stage_module.run_stage(drill, cfg, start=0.0, end=2000.0, training_s=400.0)
    assert timeouts == [1000.0]  # 2000 - 400 - 600
    monkeypatch.setattr(stage_module, "open_study", lambda cfg, storage: optuna.create_study())
    stage_module.run_stage(drill, cfg, start=0.0, end=900.0, training_s=400.0)  # none can end in time and none has completed:
    assert timeouts == [1000.0, None]  # one more per worker, as a stage that completes nothing would


def test_hours_too_short_for_the_least_drill_are_refused_before_anything_is_written(data_root, monkeypatch):
    """Whatever the hours, each search stage trains at least once and Verify trains every seed (a
    0.01 h drill ended at 1.8 min): hours that cannot hold that are refused, naming hours that can."""
    monkeypatch.setattr(plan_module, "seconds_per_image", lambda arch, data, engine, images=2000: 1e-3)
    cfg = DrillConfig(name="h", data_dir=str(data_root), **{**TINY, "hours": 0.001})
    with pytest.raises(StudyError, match=r"--hours 0.001 is too short for this drill: .* use --hours [\d.]+ or more") as e:
        Drill(cfg, log=lambda line: None)
    assert not (data_root / "studies").exists()
    need = float(re.search(r"use --hours ([\d.]+)", str(e.value)).group(1))
    p = Drill(replace(cfg, hours=need), log=lambda line: None).plan  # 2 x 900 images a search training, 2 x 1,200 a seed
    assert least_s(p) == pytest.approx(1.8 + 1.8 + 2 * 2.4)
    assert least_s(p) <= need * 3600 < 1.5 * least_s(p)
    assert p.race_end + p.verify_s <= 1.3 * need * 3600


def test_the_plan_costs_verify_on_the_threads_a_worker_trains_with(data_root, monkeypatch):
    """Verify's seeds train a worker a core; timed on the leader's threads the fp32 engine looked
    cheaper than it is (mnist-drill-7k-11 reserved 14.1 min and took 25.3). The search engine is
    timed on the leader's threads (Explore's fidelity is set from it); the threads are put back."""
    calls = []

    def timed(arch, data, engine, images=2000):
        calls.append((engine.precision, torch.get_num_threads()))
        return 3e-3 if engine.precision == "fp32" else 1e-3

    monkeypatch.setattr(plan_module, "seconds_per_image", timed)
    leader, worker = 4, threads_each(2, cores=4)  # two workers on four cores: two threads each
    monkeypatch.setattr(plan_module, "threads_each", lambda workers: threads_each(workers, cores=4))
    before = torch.get_num_threads()
    torch.set_num_threads(leader)
    try:
        cfg = DrillConfig(name="t", data_dir=str(data_root), **{**TINY, "workers": 2})
        data = D.load("mnist", data_root, val_size=100, test=False)
        p = plan_module.timed_plan(cfg, data, [], plan_module.Engine("cpu", "bf16"))
        assert calls[-2:] == [("fp32", worker), ("bf16", worker)]  # the ratio, on a worker's threads
        assert {c for c in calls[:-2]} == {("bf16", leader)} and torch.get_num_threads() == leader
    finally:
        torch.set_num_threads(before)
    assert p.sec_per_image_verify == pytest.approx(3 * p.sec_per_image)


def test_the_plan_times_models_drawn_from_the_default_space_within_the_budget(data_root):
    data = D.load("mnist", data_root, val_size=100, test=False)
    drawn = typical_archs(4000, data, k=3, seed=0)
    assert len(drawn) == 3 and all(count_params(a) <= 4000 for a in drawn)
    assert drawn == typical_archs(4000, data, k=3, seed=0) != typical_archs(4000, data, k=3, seed=1)


def test_a_baseline_over_the_budget_is_shrunk_to_fit():
    exp1 = baselines.get("exp1").arch
    small = scale_to_budget(exp1, 5000)
    assert count_params(small) <= 5000 < count_params(exp1) and len(small.blocks) == len(exp1.blocks)
    assert scale_to_budget(exp1, 50) is None


def test_explores_pick_is_filled_to_the_budget_with_the_weight_average():
    exp4 = baselines.get("exp4").arch
    wide = filled(exp4, 12_000)
    assert count_params(exp4) < count_params(wide) <= 12_000 and wide.recipe.ema == FILL_EMA
    assert count_params(scale_to_budget(wide, 12_000)) == count_params(wide)  # already the widest that fits
    assert [type(b) for b in wide.blocks] == [type(b) for b in exp4.blocks] and wide.recipe.lr == exp4.recipe.lr


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 101, "a b"])
def test_bad_drill_names_are_refused(name):
    with pytest.raises(StudyError, match="name"):
        DrillConfig(name=name, budget=5000)
    if "/" not in name or ".." in name:  # a study's stage is NAME/stage; a drill's name is one folder
        with pytest.raises(StudyError, match="name"):
            check_name(name)


@pytest.mark.parametrize("bad", [{"budget": 0}, {"hours": 0}, {"seeds": 0}, {"bar": 101}, {"workers": 0}])
def test_bad_drill_settings_are_refused(bad):
    with pytest.raises(StudyError):
        DrillConfig(**{"name": "x", "budget": 5000, **bad})


# ----------------------------------------------------------------------------- the stages, end to end
TINY = {"budget": 3000, "hours": 0.006, "epochs": 2, "val_size": 300, "seeds": 2, "bar": 10.0, "workers": 1}


@pytest.fixture(scope="session")
def tiny_drill(tmp_path_factory, worker_id):
    """One TINY drill run to its end with the test split guarded until Verify: (its root, config,
    outcome, the splits it read in order). The tests that read a finished drill share it, across
    xdist's workers too (a drill is ~20 s of training): the first to ask runs it under a file lock,
    as pytest-xdist's docs advise for a session fixture that must run once."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "tiny-drill"  # a worker's parent: this session's, shared
    cfg = DrillConfig(name="d", data_dir=str(root), **TINY)
    with FileLock(f"{root}.lock"):
        if not (root / "outcome.json").exists():
            write_idx_dataset(root)
            reads, started, read_source, original_verify = [], {}, D.read_source, drill_module.STAGES["verify"]

            def guarded(path, test):
                if test and "verify" not in started:
                    raise AssertionError("the test split was read before Verify")
                reads.append("test" if test else "train")
                return read_source(path, test)

            def verify(drill):
                assert drill.read("choice") is not None  # the pick is stored before the test split is read
                started["verify"] = True
                original_verify(drill)

            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(root)
                mp.delenv("BUDGETNAS_DATA", raising=False)
                mp.setattr(D, "read_source", guarded)
                mp.setitem(drill_module.STAGES, "verify", verify)
                torch.set_num_threads(1)
                drill, out = run_drill(cfg)
                cfg = drill.cfg
                write_drill_report(drill.study, cfg.folder)
            (root / "outcome.json").write_text(json.dumps({"out": {"verdict": out.verdict, "params": out.params},
                                                           "reads": reads, "hours": cfg.hours}))
    got = json.loads((root / "outcome.json").read_text())
    return root, replace(cfg, hours=got["hours"]), got["out"], got["reads"]


def test_a_drill_runs_every_stage_and_reads_the_test_split_only_in_verify(tiny_drill, monkeypatch):
    root, cfg, out, reads = tiny_drill
    monkeypatch.chdir(root)
    assert "test" in reads and out["verdict"]["passed"] is not None
    folder = cfg.folder
    for name in ("narrow-space.toml", "best.json", "best.py", "verify.json", "REPORT.md", "race.png", "verify.png"):
        assert (folder / name).is_file(), name
    report = (folder / "REPORT.md").read_text()
    for section in ("## 1. Explore", "## 2. Narrow", "## 3. Race", "## 4. Verify"):
        assert section in report
    assert report.count("**Target.**") == 4 and report.count("**Analysis.**") == 4
    assert report.count("Trained, by LR schedule: ") == 2  # Explore's and Narrow's
    assert f"(torch {torch.__version__}, device " in report  # where Verify's numbers were made
    assert f"{out['verdict']['passes']}/{out['verdict']['seeds']} seeds pass; " in report  # a distribution
    assert "Warm starts, tried first: " in report and ("The pick is a warm start used as given" in report) != (
        "The pick was sampled by the search in Narrow" in report)  # where the warm starts came from, and the pick
    for stage in ("explore", "narrow"):  # one-cycle runs face one-cycle runs (search/study/config.py)
        stored = optuna.load_study(study_name=f"d/{stage}", storage=make_storage(cfg.storage_url)).user_attrs["config"]
        assert (stored["pruner"], stored["bar"]) == ("reach-bar", cfg.bar)
    study = optuna.load_study(study_name="d", storage=make_storage(cfg.storage_url))
    assert study.user_attrs["done"] == ["explore", "narrow", "race", "verify"]
    ended = study.user_attrs["ended"]  # each stage's end on the drill's clock, in order, shown beside the plan's
    assert list(ended) == study.user_attrs["done"] and sorted(ended.values()) == list(ended.values())
    assert ended["verify"] <= study.user_attrs["spent"]
    assert f"| verify | {out['verdict']['seeds']} | yes | {cfg.hours * 60:.1f} | {ended['verify'] / 60:.1f} |" in report
    assert study.user_attrs["spent"] <= 1.5 * cfg.seconds + study.user_attrs["plan"]["full_training_s"]  # its clock
    assert not (folder / "drill.lock").exists()
    narrow = optuna.load_study(study_name="d/narrow", storage=make_storage(cfg.storage_url))
    warm = [t.user_attrs.get("warm_from", "") for t in narrow.trials]
    assert set(study.user_attrs["space"]["warm"]) <= set(warm)  # Explore's best, retrained at full fidelity
    assert all(w.startswith(str(folder / "explore-trial")) and w.endswith("-filled.json")
               for w in study.user_attrs["space"]["warm"])
    assert "from_trials" in study.user_attrs["space"]  # a typed record (drill/state.py)
    wide = [t for t in narrow.trials if t.user_attrs.get("warm_from", "").endswith("-filled.json")]
    assert wide and all(t.params["ema"] == FILL_EMA for t in wide)  # inside the derived space, not clamped back
    for t in wide:
        written = Arch.from_json(Path(t.user_attrs["warm_from"]).read_text())
        assert t.user_attrs["params"] == count_params(written) <= cfg.budget
    # every Narrow model is trained filled to the budget, the sampled ones too
    assert narrow.user_attrs["config"]["fill"]
    space = SpaceConfig.from_dict(study.user_attrs["space"]["space"])
    for t in narrow.trials:
        if "arch" in t.user_attrs:
            fit = filled_sample(t, space, cfg.epochs, cfg.budget)  # None: over the budget even at width 2 (pruned)
            assert (fit is None) == (t.user_attrs.get("pruned_by") == "budget")
            assert fit is None or Arch.from_dict(t.user_attrs["arch"]) == fit
    assert "filled to the budget" in report and "widths scaled by the largest one factor" in report
    verify = json.loads((folder / "verify.json").read_text())
    assert [r["seed"] for r in verify["runs"]] == [0, 1]
    assert (verify["dataset"], verify["schedule"]) == (cfg.dataset, Arch.read(folder / "best.json").recipe.schedule)
    scores = study.user_attrs["choice"]["scores"]  # the pick on validation, for reach-bar's validation-to-test gap
    assert verify[VALIDATION_KEY] == pytest.approx(sum(scores) / len(scores))


def test_the_race_trains_a_rounds_seeds_side_by_side_and_keeps_each(tiny_drill, monkeypatch):
    """The finished drill's race run again from Narrow's first runs, with two workers."""
    root, cfg, _, _ = tiny_drill
    monkeypatch.chdir(root)
    drill = Drill(replace(cfg, workers=2), log=lambda line: None)
    narrow = drill.stage_study("narrow")
    trained = [t for t in narrow.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(trained) == 1:  # a loaded machine may leave Narrow time for one training; a race needs two runners
        t = trained[0]
        narrow.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values,
                                                   user_attrs=t.user_attrs))
        trained = [t for t in narrow.trials if t.state == optuna.trial.TrialState.COMPLETE]
    first = [R.Runner(t.number, t.user_attrs["params"], [R.seed_score(val_accs(t))]) for t in trained[:R.candidates(2)]]
    drill.write("race", Race([replace(r, scores=list(r.scores)) for r in first]))
    drill.write("plan", replace(drill.plan, race_end=1e9))  # time enough for every seed
    drill.clock = Clock(drill.study)
    try:
        race(drill)
    finally:
        drill.clock.close()
    state = drill.read("race")
    extra = [len(r.scores) - 1 for r in state.runners]
    assert len(state.seconds) == sum(extra) > 0 and state.ended in ("separated", "seeds", "decided")
    for r in state.runners:  # each ran until dropped, or until the seeds or the rivals ran out
        if str(r.number) in state.dropped:
            assert len(r.scores) == state.dropped[str(r.number)]
        else:
            assert len(r.scores) >= R.MIN_SEEDS or state.ended in ("separated", "time")
        assert r.scores[0] == first[[f.number for f in first].index(r.number)].scores[0]


def test_resuming_with_other_settings_is_refused(data_root):
    roomy = {**TINY, "hours": 1.0}  # only planned, never run: hours a loaded machine's timing cannot call too short
    cfg = DrillConfig(name="r", data_dir=str(data_root), **roomy)
    Drill(cfg, log=lambda line: None)
    with pytest.raises(StudyError, match="other settings"):
        Drill(DrillConfig(name="r", data_dir=str(data_root), **{**roomy, "budget": 2000}))


# ----------------------------------------------------------------------------- kill -9 and resume
# The drill killed at a stated point, not at a polled moment a loaded machine may let pass: right after
# Narrow's first training is stored, or right after the race stores a runner's second seed.
KILLED_AT = """
import os, signal, sys
import optuna
from budgetnas.search.drill import run as drill
from budgetnas.search.cli import main

at, args = sys.argv[1], sys.argv[2:]
put, optimize = drill.Drill.write, optuna.Study.optimize

def die(study, trial):
    if at == "narrow" and study.study_name.endswith("/narrow") and trial.state == optuna.trial.TrialState.COMPLETE:
        os.kill(os.getpid(), signal.SIGKILL)

def optimize_then_die(self, *a, callbacks=None, **k):
    return optimize(self, *a, callbacks=[*(callbacks or []), die], **k)

def put_then_die(self, key, value):
    put(self, key, value)
    if at == "race" and key == "race" and any(len(r.scores) > 1 for r in value.runners):
        os.kill(os.getpid(), signal.SIGKILL)

optuna.Study.optimize, drill.Drill.write = optimize_then_die, put_then_die
# The race's share at its cap, half of what is left when Narrow is planned (by the first process, which
# stores the plan): on a loaded machine a tiny drill's Narrow overran a share of a few trainings, no race
# round ran, and nothing was killed in the race. 0.02 h: a round of three runners on one worker is three
# trainings, which 0.012 h left no room for on a loaded machine.
from budgetnas.search.drill import racing
racing.rounds = lambda workers: 10**6
main(["drill", *args])
"""


def drill_proc(tmp_path, data_root, log, killed_at=""):
    args = ["--name", "k", "--budget", "3000", "--hours", "0.02", "--epochs", "2", "--val-size", "300",
            "--seeds", "1", "--workers", "1", "--threads", "1", "--data-dir", str(data_root)]
    return subprocess.Popen([sys.executable, "-c", KILLED_AT, killed_at, *args], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT)


def state(tmp_path):
    if not (tmp_path / "studies/k/drill.journal").exists():
        return None, {}
    storage = make_storage(f"journal:{tmp_path}/studies/k/drill.journal", None)
    try:
        drill = optuna.load_study(study_name="k", storage=storage)
    except KeyError:
        return None, {}
    out = {}
    for stage in ("explore", "narrow"):
        try:
            s = optuna.load_study(study_name=f"k/{stage}", storage=storage)
        except KeyError:
            continue
        out[stage] = {t.number: (t.state, t.params) for t in s.get_trials(deepcopy=False)}
    return drill, out


def test_a_drill_killed_in_narrow_and_in_race_resumes_without_losing_or_repeating_training(tmp_path, data_root):
    log_path = tmp_path / "drill.log"
    done = optuna.trial.TrialState.COMPLETE

    with open(log_path, "w") as log:
        assert drill_proc(tmp_path, data_root, log, killed_at="narrow").wait(timeout=300) == -signal.SIGKILL, log_path.read_text()[-800:]
    _, before = state(tmp_path)
    kept = {n: p for n, (st, p) in before["narrow"].items() if st == done}
    assert kept, log_path.read_text()[-800:]

    with open(log_path, "a") as log:
        assert drill_proc(tmp_path, data_root, log, killed_at="race").wait(timeout=300) == -signal.SIGKILL, log_path.read_text()[-800:]
    drill, mid = state(tmp_path)
    scores_at_kill = {r["number"]: list(r["scores"]) for r in drill.user_attrs["race"]["runners"]}
    assert drill.user_attrs["done"] == ["explore", "narrow"]
    narrow_at_kill = {n: p for n, (st, p) in mid["narrow"].items() if st == done}

    with open(log_path, "a") as log:
        proc = drill_proc(tmp_path, data_root, log)
        assert proc.wait(timeout=300) in (0, 1), log_path.read_text()[-800:]
    drill, after = state(tmp_path)
    assert drill.user_attrs["done"] == ["explore", "narrow", "race", "verify"]  # each stage once
    for n, p in kept.items():  # no finished Narrow training lost
        assert after["narrow"][n] == (done, p)
    assert {n for n, (st, _) in after["narrow"].items() if st == done} == set(narrow_at_kill)  # none after Narrow ended
    for r in drill.user_attrs["race"]["runners"]:  # the race went on from the stored scores
        assert r["scores"][: len(scores_at_kill[r["number"]])] == scores_at_kill[r["number"]]
        assert len(r["scores"]) <= R.MAX_SEEDS
    text = log_path.read_text()
    assert [text.count(f"[{s}] starting") for s in ("explore", "narrow", "race", "verify")] == [1, 2, 2, 1]
    assert text.count("drill: breaking the lock of pid") == 2  # each killed drill's, as the next one starts


@pytest.mark.parametrize("argv, said", [(["--name", "../up", "--budget", "5000"], "a drill's name"),
                                        (["--name", "ok", "--budget", "10"], "budget"),
                                        (["--name", "ok", "--budget", "5000", "--hours", "-1"], "hours must be")])
def test_bad_drill_input_is_one_line_exit_2_and_writes_nothing(argv, said, tmp_path, data_root, capsys):
    from budgetnas.search.cli import main

    with pytest.raises(SystemExit) as e:  # with data at hand, so that what is refused is the flag, not missing files
        main(["drill", *argv, "--data-dir", str(data_root)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("budgetnas: error:") and len(err.splitlines()) == 1
    assert said in err, err
    assert not (tmp_path / "studies").exists() and not (tmp_path.parent / "up").exists()


def test_every_verified_model_of_the_project_is_a_warm_start_scaled_to_the_budget(tmp_path, monkeypatch):
    """A prior that travels: a passing verify's best.json from any study (another dataset, another
    budget) is adapted to this data and scaled to this budget; a failed one is not a prior, and one
    verified twice (a drill that picked it as a prior) is one prior."""
    from budgetnas.search.drill.warm import verified_priors

    monkeypatch.chdir(tmp_path)
    for name, passed in (("big-pass", True), ("big-fail", False), ("picked-it-again", True)):
        folder = tmp_path / "studies" / name
        folder.mkdir(parents=True)
        (folder / "best.json").write_text(baselines.get("exp4").arch.to_json())  # 28x28 grey, 7,570 params
        (folder / "verify.json").write_text(json.dumps({"verdict": {"passed": passed}}))
    (tmp_path / "studies" / "broken").mkdir()
    (tmp_path / "studies" / "broken" / "best.json").write_text("{")
    (tmp_path / "studies" / "broken" / "verify.json").write_text(json.dumps({"verdict": {"passed": True}}))
    data = D.load(str(write_npz(tmp_path / "rgb.npz", size=(32, 32), classes=5, n_train=300, n_test=50)), val_size=50)
    priors = verified_priors(DrillConfig(name="new", budget=4000), data)
    assert list(priors) == ["warm-big-pass-prior"]
    arch = priors["warm-big-pass-prior"]
    assert (arch.in_channels, arch.image_size, arch.classes) == (3, (32, 32), 5) and 3000 < count_params(arch) <= 4000


def test_the_progress_line_counts_full_training_equivalents(capsys):
    """Explore's trainings are short (few epochs on a subset): its rate is in full trainings, not its own."""
    from budgetnas.search.drill.stage import StageProgress

    study = optuna.create_study(direction="maximize")
    hour_ago = time.time() - 3600
    for _ in range(4):  # four trainings of 3 epochs, each epoch a tenth of a full one's images (15 full epochs)
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"history": [{}] * 3}))  # started now
    progress = StageProgress("d/explore", 60, 0.1 / 15, hour_ago, hour_ago + 7200, hour_ago + 7200, 2.0)
    progress(study, study.trials[-1])
    assert "4 trained of ~60 planned, 0.1 full trainings/h" in capsys.readouterr().out  # 12 epochs x 0.1 / 15 = 0.08
