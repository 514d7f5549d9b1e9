"""reach-bar (search/study/curves.py): a training that past verified runs say cannot reach the bar
stops; the runs are read by dataset, schedule and length."""

import json
import statistics

import optuna
import pytest
from optuna.trial import TrialState

from budgetnas.search.study import curves as C
from budgetnas.search.study.config import StudyConfig, make_pruner
from budgetnas.search.study.pruners import replay
from tests.conftest import curve_trial

EPOCHS = 4


def curve(final: float, epochs: int = EPOCHS, climb: float = 1.0) -> list[float]:
    """A run whose accuracy climbs to its last-3 worst `final`: epoch e lies climb x (epochs - e)
    points below, with a small wobble so that the fit's residuals are not all zero."""
    return [final - climb * (epochs - e) + 0.01 * (e % 2) for e in range(1, epochs + 1)]


def write_record(folder, name, finals, epochs=EPOCHS, climb=1.0, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    runs = [{"min_last3": f, "history": [{"epoch": e, "test_acc": a} for e, a in enumerate(curve(f, epochs, climb), 1)]}
            for f in finals]
    (folder / name).write_text(json.dumps({"target": str(folder / "best.py"), "runs": runs, **fields}))


FINALS = [99.0 + 0.02 * i for i in range(30)]  # 99.00 .. 99.58: some reach 99.4, some do not


@pytest.fixture
def history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_record(tmp_path / "studies" / "a", "verify.json", FINALS, dataset="mnist", schedule="onecycle",
                 **{C.VALIDATION_KEY: statistics.mean(FINALS)})  # validation read as test: a gap of 0
    return tmp_path / "studies"


def test_runs_are_read_by_dataset_schedule_and_length_each_once(history):
    write_record(history / "copy", "verify.json", FINALS, dataset="mnist", schedule="onecycle")  # the same runs again
    write_record(history / "fashion", "verify.json", [90.0] * 30, dataset="fashion-mnist", schedule="onecycle")
    write_record(history / "step", "verify.json", [98.0] * 30, dataset="mnist", schedule="step")
    # an older record: no dataset or schedule of its own; its command and the Arch JSON beside its module say
    write_record(history / "old", "verify.json", [97.0, 97.5], command="budgetnas verify x.py --dataset kmnist")
    (history / "old" / "best.json").write_text(json.dumps({"recipe": {"schedule": "cosine"}}))
    assert sorted(f for _, f in C.past_curves("mnist", "onecycle", EPOCHS)) == FINALS
    assert [f for _, f in C.past_curves("kmnist", "cosine", EPOCHS)] == [97.0, 97.5]
    assert C.past_curves("mnist", "onecycle", EPOCHS + 1) == []
    assert C.past_curves("fashion-mnist", "step", EPOCHS) == []


def test_a_run_below_what_passed_is_hopeless_and_one_on_the_way_is_not(history):
    fits = C.fits(C.past_curves("mnist", "onecycle", EPOCHS))
    at3 = fits[3]  # one point below the end, by construction
    assert at3.r > 0.99 and at3.slope == pytest.approx(1, abs=0.05)
    assert at3.hopeless(99.0 - 1, bar=99.4)  # on course for 99.0
    assert not at3.hopeless(99.5 - 1, bar=99.4)  # on course for 99.5
    assert C.fits(C.past_curves("mnist", "onecycle", EPOCHS)[: C.MIN_RUNS - 1]) == {}  # too few runs: no verdict


def test_reach_bar_stops_the_hopeless_once_the_stage_has_its_first_completed(history):
    cfg = StudyConfig(pruner="reach-bar", epochs=EPOCHS, bar=99.4)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    hopeless = curve(99.0)
    for _ in range(C.KEEP):  # the race needs entrants: the first KEEP complete whatever the bar says
        assert not curve_trial(study, "onecycle", hopeless)
    assert curve_trial(study, "onecycle", hopeless) and study.pruner.stopped_by == "bar"  # the objective records it
    assert not curve_trial(study, "onecycle", curve(99.55))
    assert curve_trial(study, "step", hopeless)  # no verified step runs: judged by the other schedules' runs


def test_validation_is_raised_by_the_largest_gap_measured_and_without_one_the_bar_judges_no_one(history):
    write_record(history / "b", "verify.json", [99.3, 99.5], dataset="mnist", **{C.VALIDATION_KEY: 99.1})
    write_record(history / "c", "verify.json", [99.3], dataset="fashion-mnist", **{C.VALIDATION_KEY: 98.0})
    assert sorted(C.past_offsets("mnist")) == pytest.approx([0.0, 0.3])  # "a" and "b"; "c" is other data
    study = optuna.create_study(direction="maximize",
                                pruner=make_pruner(StudyConfig(pruner="reach-bar", epochs=EPOCHS, bar=99.4)))
    for _ in range(C.KEEP):
        curve_trial(study, "onecycle", curve(99.55))
    assert not curve_trial(study, "onecycle", curve(99.2))  # on validation; on test about 99.5
    assert curve_trial(study, "onecycle", curve(98.9))  # 99.2 on test: still short
    for path in history.glob("*/verify.json"):  # no drill record: validation's gap to test unknown
        record = json.loads(path.read_text())
        record.pop(C.VALIDATION_KEY, None)
        path.write_text(json.dumps(record))
    study = optuna.create_study(direction="maximize",
                                pruner=make_pruner(StudyConfig(pruner="reach-bar", epochs=EPOCHS, bar=99.4)))
    assert not any(curve_trial(study, "onecycle", curve(98.0)) for _ in range(C.KEEP + 2))


def test_a_schedule_without_runs_of_its_own_stops_only_where_every_other_schedule_says_so(history):
    write_record(history / "step", "verify.json", FINALS, climb=2.0, dataset="mnist", schedule="step")  # slower climbs
    study = optuna.create_study(direction="maximize",
                                pruner=make_pruner(StudyConfig(pruner="reach-bar", epochs=EPOCHS, bar=99.4)))
    for _ in range(C.KEEP):
        curve_trial(study, "onecycle", curve(99.55))
    assert not curve_trial(study, "cosine", curve(99.5, climb=2.0))  # short by onecycle's runs, on course by step's
    assert curve_trial(study, "cosine", curve(98.5, climb=2.0))  # short by both


def test_without_a_bar_reach_bar_is_the_median_rule(history):
    study = optuna.create_study(direction="maximize",
                                pruner=make_pruner(StudyConfig(pruner="reach-bar", epochs=EPOCHS)))
    assert not any(curve_trial(study, "onecycle", curve(99.0)) for _ in range(C.KEEP + 2))


def test_the_replay_counts_what_reach_bar_saves(history):
    study = optuna.create_study(direction="maximize")
    finals = (99.0, 99.05, 99.1, 98.9, 98.8, 99.5)
    for final in finals:  # every one trained in full: the study has no pruner
        curve_trial(study, "onecycle", curve(final))
    kept = replay(study, "reach-bar", bar=99.4)
    assert kept["epochs_trained"] < kept["epochs_full"] and kept["best_kept"]
    assert replay(study, "reach-bar")["epochs_trained"] == replay(study, "median-by-schedule")["epochs_trained"]


def test_a_search_records_the_trainings_the_bar_stopped(tmp_path, data_root, monkeypatch):
    """Through the objective: the first KEEP complete, the rest stop at their first epoch, each
    recorded as stopped by the bar (status and the notebook count them apart)."""
    from budgetnas.search.engine.train import Engine
    from budgetnas.search.report.status import prune_counts
    from budgetnas.search.study.workers import run
    from tests.conftest import SMALL, cfg

    for schedule in SMALL.schedule:  # runs of the search's 2 epochs that reached 99.x
        write_record(tmp_path / "studies" / schedule, "verify.json", FINALS, epochs=2, dataset="mnist",
                     schedule=schedule, **{C.VALIDATION_KEY: statistics.mean(FINALS)})
    trials = C.KEEP + 2
    study = run(cfg(data_root, trials=trials, pruner="reach-bar", bar=99.4), engine=Engine("cpu"))
    stopped = [t for t in study.trials if t.user_attrs.get("pruned_by") == "bar"]
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == C.KEEP
    assert len(stopped) == trials - C.KEEP and all(len(t.user_attrs["history"]) == 1 for t in stopped)
    assert prune_counts(study)["of them, could not reach the bar"] == len(stopped)
