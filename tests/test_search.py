import statistics
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from budgetnas import baselines
from budgetnas.search.engine.loop import Diverged
from budgetnas.search.engine.train import Engine
from budgetnas.search.report.status import summary
from budgetnas.search.study.config import (
    FINGERPRINT,
    StudyConfig,
    StudyError,
    fingerprint_of,
    load_config,
    make_pruner,
    open_study,
)
from budgetnas.search.study.objective import make_objective
from budgetnas.search.study.select import best_trial, pareto_front
from budgetnas.search.study.storage import make_storage
from budgetnas.search.study.workers import run
from budgetnas.space import Arch, SpaceConfig, count_params, min_params, params_of
from tests.conftest import SMALL, cfg, curve_trial, filled_sample, random_archs, write_npz

# A small space so that tiny trials train in about a second on synthetic data.






def no_training(*args, **kwargs):
    raise AssertionError("training must not be called for an over-budget trial")


def test_over_budget_trial_is_pruned_before_training():
    objective = make_objective(budget=300, space=SpaceConfig(channels=(16, 32), stages=(2, 2)), epochs=1,
                               data=None, train_fn=no_training)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=5)
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["pruned_by"] == "budget"
        assert t.user_attrs["params"] > 300
        assert t.constraints == {"params": t.user_attrs["params"] - 300}  # what TPE reads


def test_a_filling_study_trains_each_sample_scaled_to_the_budget():
    """`fill`: the sampled widths are proportions, scaled by the largest one factor that fits, so
    over-budget samples are narrowed (not pruned) and small ones widened."""
    space = SpaceConfig(separable=(False, True))

    def study(fill: bool) -> list:
        s = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        s.optimize(make_objective(budget=6000, space=space, epochs=15, data=None, fill=fill, dry_run=True), n_trials=40)
        return [t for t in s.trials if t.user_attrs.get("pruned_by") != "shape"]

    plain, full = study(False), study(True)
    for t in full:
        assert t.state == TrialState.COMPLETE and Arch.from_dict(t.user_attrs["arch"]) == filled_sample(t, space, 15, 6000)
        assert t.user_attrs["params"] <= 6000
    used = [t.user_attrs["params"] / 6000 for t in full]  # a flatten head's last width comes in coarse steps
    short = [t.user_attrs["params"] / 6000 for t in plain if t.state == TrialState.COMPLETE]
    assert statistics.median(used) > 0.95 > statistics.median(short)
    assert any(v is True for t in full for k, v in t.params.items() if k.endswith("_separable"))  # depthwise too


def test_the_space_samples_within_the_budget_where_it_can():
    """The objective hands the budget to the space: over 100 random draws of the default space at a
    tight budget, few are pruned before training (the rest of the budget is TPE's, via constraints)."""
    objective = make_objective(budget=4000, space=SpaceConfig(), epochs=15, data=None, dry_run=True)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=100)
    assert sum(t.state == TrialState.PRUNED for t in study.trials) <= 10
    assert all(t.user_attrs["params"] <= 4000 for t in study.trials if t.state == TrialState.COMPLETE)


def test_diverged_trial_is_pruned_with_reason_and_study_goes_on(data_root):
    calls = []

    def diverging(*args, **kwargs):
        calls.append(1)
        raise Diverged("training loss became nan in epoch 1")

    objective = make_objective(budget=100_000, space=SMALL, epochs=1, data=None, train_fn=diverging)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=3)
    assert len(calls) == 3 and all(t.user_attrs["pruned_by"] == "diverged" for t in study.trials)
    assert "nan" in study.trials[0].user_attrs["pruned_reason"]


def test_median_pruner_stops_a_hopeless_trial():
    study = optuna.create_study(direction="maximize", pruner=make_pruner(StudyConfig(pruner="median")))
    for _ in range(5):
        t = study.ask()
        for epoch in range(1, 5):
            t.report(90.0 + epoch, epoch)
        study.tell(t, 95.0)
    t = study.ask()
    for epoch in range(1, 4):
        t.report(50.0, epoch)
    assert t.should_prune()


ONE_CYCLE = [92.0, 96.5, 98.0, 98.5, 99.0, 99.3]  # low while the rate is high, best at the end
CONSTANT = [98.5, 98.9, 99.0, 99.1, 99.1, 99.2]  # high early, flat


@pytest.mark.parametrize("pruner", ["median", "median-by-schedule"])
def test_median_by_schedule_judges_a_one_cycle_run_against_one_cycle_runs(pruner):
    study = optuna.create_study(direction="maximize", pruner=make_pruner(StudyConfig(pruner=pruner, epochs=6)))
    for _ in range(5):
        assert not curve_trial(study, "none", CONSTANT)  # the first five: no verdict yet
    # a one-cycle run that ends above every constant one: the plain median stops it at epoch 2
    stopped = curve_trial(study, "onecycle", [acc + 0.05 for acc in ONE_CYCLE])
    assert stopped == (pruner == "median")
    if pruner == "median-by-schedule":
        for _ in range(4):  # five one-cycle peers now: one clearly behind them is stopped
            assert not curve_trial(study, "onecycle", ONE_CYCLE)
        assert curve_trial(study, "onecycle", [acc - 1.0 for acc in ONE_CYCLE])
        assert not curve_trial(study, "onecycle", [acc + 0.05 for acc in ONE_CYCLE])
        assert curve_trial(study, "none", [acc - 0.5 for acc in CONSTANT])  # and constant runs still face theirs


def test_small_search_stores_everything_and_resumes(data_root):
    c = cfg(data_root)
    study = run(c, engine=Engine("cpu"))
    assert len(study.trials) == 3
    for t in study.trials:
        assert {"arch", "params"} <= set(t.user_attrs)
        if t.state == TrialState.COMPLETE:
            assert len(t.user_attrs["history"]) == 2 and t.user_attrs["seconds"] > 0
            assert t.value == pytest.approx(sum(h["val_acc"] for h in t.user_attrs["history"]) / 2)
    assert best_trial(study).value > 30  # synthetic data: chance is 10%
    again = run(c, engine=Engine("cpu"))
    assert len(again.trials) == 6 and "best" in summary(again)


def test_a_search_says_what_it_does_before_the_first_trial_ends(data_root, capsys):
    c = cfg(data_root, trials=1)
    run(c, engine=Engine("cpu"))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("data: mnist, ") and "validation images" in out[0]
    assert out[1].startswith(f"study {c.name}: created in ")
    assert any(" epoch 1/2: val " in line for line in out)  # not a terminal: a line an epoch
    run(c, engine=Engine("cpu"))
    assert "resumed with 1 trials" in capsys.readouterr().out


def test_resume_with_changed_budget_or_space_is_refused(data_root):
    run(cfg(data_root, trials=1, dry_run=False, epochs=1), engine=Engine("cpu"))
    with pytest.raises(StudyError, match="budget: was 3000, now 4000"):
        open_study(cfg(data_root, budget=4000))
    with pytest.raises(StudyError, match="space: changed"):
        open_study(cfg(data_root, space=SpaceConfig()))


def test_a_study_made_before_a_space_knob_existed_still_resumes(data_root):
    study = open_study(cfg(data_root))
    old = study.user_attrs[FINGERPRINT]
    del old["space"]["ema"]  # as stored before the knob was added
    study.set_user_attr(FINGERPRINT, old)
    assert open_study(cfg(data_root)).study_name == "t"  # the missing knob counts as its default
    with pytest.raises(StudyError, match="space: changed"):
        open_study(cfg(data_root, space=replace(SMALL, ema=(0.998,))))


def test_a_study_made_before_val_split_existed_resumes_as_random(data_root):
    study = open_study(cfg(data_root))
    old = study.user_attrs[FINGERPRINT]
    del old["val_split"]  # as stored before the setting was added
    study.set_user_attr(FINGERPRINT, old)
    assert fingerprint_of(open_study(cfg(data_root)))["val_split"] == "random"
    with pytest.raises(StudyError, match="val_split: was 'random', now 'tail'"):
        open_study(cfg(data_root, val_split="tail"))
    with pytest.raises(StudyError, match="val_split must be one of"):
        cfg(data_root, val_split="head")


def test_warm_start_enqueues_the_baselines(data_root):
    study = open_study(cfg(data_root, warm_start=True, space=SpaceConfig(), budget=8000))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["baseline"] for t in waiting] == ["exp1", "exp2", "exp3", "exp4"]


def test_warm_from_enqueues_arch_files_after_the_baselines(data_root, tmp_path):
    bad, good = tmp_path / "bad.json", tmp_path / "exp3.json"
    bad.write_text("{not json")
    good.write_text(baselines.get("exp3").arch.to_json())
    with pytest.raises(StudyError, match="warm_from .*bad.json: not an architecture"):
        open_study(cfg(data_root, warm_start=True, warm_from=(str(bad),), space=SpaceConfig(), budget=8000))
    # the failed attempt stamped nothing: the same study opens once the file list is fixed
    no_dropout = SpaceConfig(dropout=(0.0, 0.0))  # exp3 (dropout 0.05) is not in it; moved, it is
    study = open_study(cfg(data_root, warm_start=True, warm_from=(str(good),), space=no_dropout, budget=8000))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert "exp3" not in [t.user_attrs.get("baseline") for t in waiting]
    assert waiting[-1].user_attrs == {"warm_from": str(good)}
    assert waiting[-1].system_attrs["fixed_params"] == {**params_of(baselines.get("exp3").arch), "dropout": 0.0}


def test_warm_from_in_a_study_file(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(baselines.get("exp2").arch.to_json())
    (tmp_path / "s.toml").write_text('[study]\nwarm_from = ["a.json", "b.json"]\n')
    assert load_config(tmp_path / "s.toml").warm_from == ("a.json", "b.json")
    (tmp_path / "s.toml").write_text('[study]\nwarm_from = "a.json"\n')
    with pytest.raises(StudyError, match="warm_from must be a list of file names"):
        load_config(tmp_path / "s.toml")
    with pytest.raises(StudyError, match="warm_from nope.json: cannot read it"):
        StudyConfig(warm_from=("nope.json",), storage="sqlite:///x.db")  # refused as the settings are made
    assert not (tmp_path / "x.db").exists()


def test_pareto_dry_run_and_front(data_root):
    study = run(cfg(data_root, objective="pareto", dry_run=True, trials=30, storage=None), engine=Engine("cpu"))
    assert len(study.directions) == 2
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    front = pareto_front(done)
    assert front and all(t.user_attrs["params"] <= 3000 for t in front)


def test_same_seed_same_trials(data_root):
    a = run(cfg(data_root, storage="sqlite:///a.db", trials=2, epochs=1), engine=Engine("cpu"))
    b = run(cfg(data_root, storage="sqlite:///b.db", trials=2, epochs=1), engine=Engine("cpu"))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.values for t in a.trials] == [t.values for t in b.trials]


@pytest.mark.parametrize("bad, match", [
    ({"budget": 0}, r"budget must be a whole number in \[1, "),
    ({"objective": "speed"}, "objective"),
])
def test_bad_study_settings(bad, match):
    with pytest.raises(StudyError, match=match):
        StudyConfig(**bad)


def test_the_smallest_model_is_counted_for_the_datas_input_and_classes(tmp_path):
    """The budget's lower bound is the space's smallest model for this data, not for a 28x28 grey,
    10-class stand-in: 12 classes of colour need more than MNIST's smallest, two grey classes less."""
    colour = write_npz(tmp_path / "c.npz", n_train=400, n_test=50)  # 32x32, 3 channels, 12 classes
    two = write_npz(tmp_path / "g.npz", size=(28, 28), channels=1, classes=2, n_train=400, n_test=50)
    stand_in = min_params(SpaceConfig())
    with pytest.raises(StudyError, match=r"smallest model the space holds for this data \(\d+ params for 32x32px "
                                         r"images of 3 channel\(s\), 12 classes\)"):
        StudyConfig(dataset=str(colour), budget=stand_in, val_size=50).with_data()
    StudyConfig(dataset=str(two), budget=stand_in - 1, val_size=50).with_data()  # refused when 28x28 grey stood in


@pytest.mark.parametrize("space", [SpaceConfig(), SpaceConfig(separable=(True, False), channels=(8, 16))])
def test_min_params_is_a_real_lower_bound(space):
    assert min(count_params(a) for a in random_archs(300, seed=4, space=space)) >= min_params(space)
    assert min_params(space) < min_params(replace(space, channels=(space.channels[0] + 8, 32)))


def test_bad_storage_url():
    from budgetnas.search.study.storage import StorageError

    with pytest.raises(StorageError, match="storage must be"):
        make_storage("redis://x")
    with pytest.raises(StorageError, match="does not exist"):
        make_storage("sqlite:////nonexistent/dir/x.db")


def test_config_file(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[study]\nname = "x"\nbudget = 5000\n[space]\nchannels = [4, 16]\n')
    c = load_config(p, trials=7)
    assert (c.name, c.budget, c.trials, c.space.channels) == ("x", 5000, 7, (4, 16))
    p.write_text('[study]\nbudgt = 5000\n')
    with pytest.raises(StudyError, match="unknown"):
        load_config(p)
    p.write_text('[study]\nbudget = "big"\n')
    with pytest.raises(StudyError, match="budget must be int"):
        load_config(p)


def test_trials_carry_notes_and_artifacts(data_root):
    from optuna.artifacts import get_all_artifact_meta
    from optuna_dashboard import get_note

    study = run(cfg(data_root, name="n", storage="sqlite:///n.db", trials=4), engine=Engine("cpu"))
    assert "### Target" in get_note(study) and "Baselines" in get_note(study)
    storage = make_storage("sqlite:///n.db", heartbeat=None)
    for t in study.trials:
        note = get_note(optuna.Trial(study, t._trial_id))
        assert "### Target" in note and "### Analysis" in note
        artifacts = sorted(m.filename for m in get_all_artifact_meta(t, storage=storage))
        if t.state == TrialState.COMPLETE:
            assert artifacts == [f"trial_{t.number}.py", f"trial_{t.number}_curve.png"] and "Completed" in note
        elif t.user_attrs.get("pruned_by") == "budget":
            assert artifacts == [] and "exceed the budget" in note


def test_the_head_has_as_many_logits_as_the_data_has_classes(data_root):
    import gzip

    import numpy as np

    from tests.conftest import idx_bytes

    for name in ("train", "t10k"):  # labels 1..10 with a gap: 10 classes, numbered 0..9 by read.py
        path = data_root / f"MNIST/raw/{name}-labels-idx1-ubyte.gz"
        labels = np.frombuffer(gzip.decompress(path.read_bytes())[8:], dtype=np.uint8).copy()
        labels[labels == 9] = 11
        labels += 1
        path.write_bytes(gzip.compress(idx_bytes(labels)))
    study = run(cfg(data_root, trials=1, epochs=1), engine=Engine("cpu"))
    t = study.trials[0]
    assert t.user_attrs["arch"]["classes"] == 10 and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert "history" in t.user_attrs  # it trained: labels up to 12 neither crash a 10-logit head nor waste logits


def test_one_ranking_breaks_ties_by_fewer_params_then_the_earlier_trial():
    from budgetnas.search.study.confirm import KEY, confirmed
    from budgetnas.search.study.select import top_trials

    study = optuna.create_study(direction="maximize")
    for value, params in [(99.0, 5000), (99.1, 6000), (99.1, 5500), (99.1, 5500)]:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"params": params}))
    assert [t.number for t in top_trials(study)] == [2, 3, 1, 0]
    assert best_trial(study).number == 2 and best_trial(study, params_max=5000).number == 0
    study.set_user_attr(KEY, {str(n): {"seeds": [1], "val_last3": [99.1]} for n in (1, 2, 3)})  # equal means
    assert [t.number for t, _ in confirmed(study)] == [2, 3, 1]
