import shutil
from pathlib import Path

import optuna
import pytest

from budgetnas import baselines
from budgetnas.search.cli import main
from budgetnas.search.engine.train import Engine
from budgetnas.search.study.notes import describe
from budgetnas.search.study.select import best_trial
from budgetnas.search.study.workers import run
from budgetnas.space import Arch, Conv, Pool, Recipe, SpaceConfig
from tests.conftest import cfg, filled_sample

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def small_study(data_root, scripted_search):
    return run(cfg(data_root, trials=4, epochs=3, storage="sqlite:///studies/t.db"), engine=Engine("cpu"))


def test_export_verify_report_on_a_small_study(small_study, data_root, tmp_path, capsys):
    shutil.copytree(ROOT / "studies" / "baselines", tmp_path / "studies" / "baselines")  # as in the repository
    best = best_trial(small_study)
    main(["export", "--study", "t", "-o", "studies/t/best.py"])
    source = (tmp_path / "studies/t/best.py").read_text()
    assert f"trial {best.number}" in source and f"PARAMS = {best.user_attrs['params']}" in source
    with pytest.raises(SystemExit):  # synthetic data never reaches 99.4%: FAIL, exit 1, results still written
        main(["verify", "studies/t/best.py", "--seeds", "2", "--epochs", "2", "--data-dir", str(data_root),
              "--json", "studies/t/verify.json"])
    main(["report", "--study", "t"])
    report = (tmp_path / "studies/t/REPORT.md").read_text()
    for heading in ("## Search: t", "## Verification: studies/t/best.py", "**Target.**", "**Results.**",
                    "**Analysis.**", "## exp4"):
        assert heading in report
    assert f"| {best.number} | {best.user_attrs['params']:,} | {best.value:.2f}% |" in report  # from the trial
    assert "Verdict: **FAIL**" in report
    assert (tmp_path / "studies/t/front.png").stat().st_size > 1000
    assert (tmp_path / "studies/t/verify.png").stat().st_size > 1000


def test_report_names_the_warm_started_trial(data_root, tmp_path, scripted_search):
    warm = Arch(blocks=(Conv(8), Pool(), Conv(10)), recipe=Recipe(optimizer="adam", schedule="cosine", lr=0.1))
    (tmp_path / "warm.json").write_text(warm.to_json())  # its lr of 0.1 is moved into the space's 0.01-0.02
    run(cfg(data_root, name="w", storage="sqlite:///studies/w.db", trials=2, epochs=1, warm_start=True,
            warm_from=("warm.json",)), engine=Engine("cpu"))
    main(["report", "--study", "w"])
    report = (tmp_path / "studies/w/REPORT.md").read_text()
    assert "Trial 0, warm-started from warm.json, has" in report


def test_a_filling_search_trains_filled_models_and_says_so(data_root, tmp_path, scripted_search):
    study = run(cfg(data_root, name="f", storage="sqlite:///studies/f.db", trials=4, epochs=1, fill=True),
                engine=Engine("cpu"))
    c = study.user_attrs["config"]
    trained = [t for t in study.trials if t.user_attrs.get("history")]
    assert trained and all(Arch.from_dict(t.user_attrs["arch"]) == filled_sample(t, SpaceConfig.from_dict(c["space"]),
                                                                               1, c["budget"]) for t in trained)
    main(["report", "--study", "f"])
    assert "widths scaled by the largest one factor within the budget" in (tmp_path / "studies/f/REPORT.md").read_text()


def test_report_has_a_section_per_verified_candidate(small_study, data_root, tmp_path, capsys):
    main(["export", "--study", "t", "-o", "studies/t/best.py"])
    main(["export", "--study", "t", "--trial", str(best_trial(small_study).number), "-o", "studies/t/other.py"])
    for module, json in (("best", "verify"), ("other", "verify-other")):
        with pytest.raises(SystemExit):
            main(["verify", f"studies/t/{module}.py", "--seeds", "1", "--epochs", "1", "--data-dir", str(data_root),
                  "--json", f"studies/t/{json}.json"])
    main(["report", "--study", "t"])
    report = (tmp_path / "studies/t/REPORT.md").read_text()
    assert report.index("## Verification: studies/t/best.py") < report.index("## Verification: studies/t/other.py")
    assert "(verify.png)" in report and "(verify-other.png)" in report
    assert (tmp_path / "studies/t/verify-other.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as e:
        main(["report", "--study", "t", "--verify", "studies/t/nope.json"])
    assert e.value.code != 0 and "no verify results at studies/t/nope.json" in capsys.readouterr().err


def test_export_by_params_max_and_trial(small_study, tmp_path):
    smallest = min((t for t in small_study.trials if t.values), key=lambda t: t.user_attrs["params"])
    main(["export", "--study", "t", "--params-max", str(smallest.user_attrs["params"]), "-o", "a.py"])
    assert f"PARAMS = {smallest.user_attrs['params']}" in (tmp_path / "a.py").read_text()
    main(["export", "--study", "t", "--trial", str(smallest.number), "-o", "b.py"])
    assert (tmp_path / "a.py").read_text() == (tmp_path / "b.py").read_text()
    main(["export", "--study", "t", "--trial", str(smallest.number), "-o", "c.json"])  # for a study's warm_from
    assert Arch.from_json((tmp_path / "c.json").read_text()) == Arch.from_dict(smallest.user_attrs["arch"])


def test_pruner_replay(data_root, capsys, scripted_search):
    run(cfg(data_root, name="p", storage="sqlite:///studies/p.db", trials=6, epochs=4, pruner="none"), engine=Engine("cpu"))
    main(["pruners", "--study", "p"])
    out = capsys.readouterr().out
    none = next(line for line in out.splitlines() if line.startswith("none"))
    assert "100%" in none and "yes" in none  # no pruner: every epoch trained, best kept
    for name in ("median", "halving", "hyperband"):
        assert any(line.startswith(name) for line in out.splitlines())


def test_status_finds_the_study_through_its_config(small_study, tmp_path, capsys):
    (tmp_path / "j.toml").write_text('[study]\nname = "t"\nstorage = "sqlite:///studies/t.db"\n')
    main(["status", "--config", "j.toml"])
    assert "study t: 4 trials" in capsys.readouterr().out


def test_trial_description_names_the_recipe():
    exp4 = baselines.get("exp4").arch
    assert "10 10 16 | 10t 10 16 16p" in describe(exp4) and "weight average" not in describe(exp4)
    assert describe(exp4.with_recipe(ema=0.998)).endswith("15 epochs, weight average 0.998")
    assert describe(Arch(blocks=(Conv(8), Pool(), Conv(8, groups=8), Conv(12, k=1)))).startswith("convs `8 | 8d 12t`")


COMMITTED = sorted(p.parent for p in (ROOT / "studies").glob("*/drill.journal")
                   if (p.parent / "REPORT.md").is_file())  # a drill still running has none yet


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_a_committed_drill_notebook_is_rebuilt_from_the_repository_alone(folder, tmp_path):
    """Every number in a committed REPORT.md is read from the committed journal: rebuilt, it is the same text."""
    shutil.copytree(folder, tmp_path / "studies" / folder.name, ignore=shutil.ignore_patterns("REPORT.md", "*.png"))
    main(["report", "--study", folder.name])
    assert (tmp_path / "studies" / folder.name / "REPORT.md").read_text() == (folder / "REPORT.md").read_text()


def test_a_picked_warm_start_is_traced_to_what_explore_tried_it_as():
    """mnist-drill-7k-8 picked explore-trial9-filled, and Explore's trial 9 was itself a warm start
    (mnist-tail's verified pick): the notebook says both, and a sampled origin as sampled."""
    from budgetnas.search.report.notebook import pick_origin

    def study(*attrs):
        s = optuna.create_study(direction="maximize")
        for a in attrs:
            s.add_trial(optuna.trial.create_trial(value=99.0, user_attrs=a))
        return s

    explore = study({"warm_from": "s/d/warm-mnist-tail-prior.json"}, {}, {"baseline": "exp4"})
    narrow = study(*({"warm_from": f"s/d/explore-trial{n}-filled.json"} for n in range(3)), {},
                   {"warm_from": "s/d/explore-trial1.json"})  # an older drill's plain warm start
    said = [pick_origin(narrow, explore, n) for n in range(5)]
    assert said[0] == ("The pick is a warm start used as given (explore-trial0-filled: Explore's trial 0, itself a warm "
                       "start, mnist-tail's verified pick, scaled to the budget, filled to the budget).")
    assert "explore-trial1-filled: Explore's trial 1, sampled by Explore's search, filled" in said[1]
    assert "itself a warm start, exp4 (baseline)" in said[2]
    assert said[3] == "The pick was sampled by the search in Narrow, not a warm start."
    assert said[4] == "The pick is a warm start used as given (explore-trial1: Explore's trial 1, sampled by Explore's search)."
