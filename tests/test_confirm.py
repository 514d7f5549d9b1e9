import statistics

import optuna
import pytest

from budgetnas.search.cli import main
from budgetnas.search.engine import seeds
from budgetnas.search.engine.loop import Diverged
from budgetnas.search.engine.seeds import DataSpec
from budgetnas.search.engine.train import Engine
from budgetnas.search.study.confirm import KEY, confirm, confirm_seed, confirmed
from budgetnas.search.study.select import completed, val_acc
from budgetnas.search.study.workers import run
from tests.conftest import cfg


@pytest.fixture
def study(data_root, scripted_search):
    study = run(cfg(data_root, trials=3, epochs=2, budget=20_000, storage="sqlite:///studies/t.db"), engine=Engine("cpu"))
    assert len(completed(study)) == 3  # nothing over budget: three to rank
    return study


def scripted(monkeypatch, scores: dict[int, float], calls: list):
    """train() replaced where the seed executor calls it: the last-3 validation score it yields is fixed per seed."""

    def train(make_model, recipe, data, seed, on_epoch, **kw):
        calls.append(seed)
        if scores[seed] != scores[seed]:  # NaN stands for a run that diverges
            raise Diverged("loss nan")
        for e in range(1, recipe.epochs + 1):
            on_epoch({"epoch": e, "val_acc": scores[seed]})

    monkeypatch.setattr(seeds, "train", train)


def test_confirm_reranks_the_top_trials_by_the_mean_over_seeds(study, data_root, monkeypatch):
    """The trial that led on its one score loses to one that is better on average."""
    top = sorted(completed(study), key=lambda t: -val_acc(t))[:2]
    lead, second = top
    scores = {confirm_seed(lead.number, 1): val_acc(lead) - 30, confirm_seed(second.number, 1): val_acc(second) + 1}
    calls = []
    scripted(monkeypatch, scores, calls)
    confirm(study, DataSpec("mnist", str(data_root), val_size=200), top=2, seeds=1)
    assert sorted(calls) == sorted(scores)  # each of the top 2 once, with its own new seed, none of the others
    rows = confirmed(study)
    assert [t.number for t, _ in rows] == [second.number, lead.number]
    assert rows[0][1] == [val_acc(second), val_acc(second) + 1]
    assert study.user_attrs[KEY][str(lead.number)]["seeds"] == [confirm_seed(lead.number, 1)]


def test_confirm_reruns_train_only_missing_seeds_and_count_divergence_as_zero(study, data_root, monkeypatch):
    best = max(completed(study), key=val_acc)
    calls = []
    scores = {confirm_seed(best.number, 1): 90.0, confirm_seed(best.number, 2): float("nan")}
    scripted(monkeypatch, scores, calls)
    data = DataSpec("mnist", str(data_root), val_size=200)
    confirm(study, data, top=1, seeds=1)
    confirm(study, data, top=1, seeds=2)
    assert calls == [confirm_seed(best.number, 1), confirm_seed(best.number, 2)]
    assert study.user_attrs[KEY][str(best.number)]["val_last3"] == [90.0, 0.0]
    assert statistics.mean(confirmed(study)[0][1]) == pytest.approx((val_acc(best) + 90.0) / 3)


def test_confirm_and_export_confirmed_from_the_cli(study, data_root, tmp_path, capsys):
    with pytest.raises(SystemExit):  # nothing confirmed yet: one line, exit 2
        main(["export", "--study", "t", "--confirmed", "-o", "a.py"])
    assert "budgetnas confirm" in capsys.readouterr().err
    main(["confirm", "--study", "t", "--top", "2", "--seeds", "1", "--data-dir", str(data_root), "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("seed 1000") == 2 and "val (extra seeds)" in out
    main(["export", "--study", "t", "--confirmed", "-o", "a.py"])
    chosen, scores = confirmed(study)[0]
    source = (tmp_path / "a.py").read_text()
    assert f"trial {chosen.number}" in source and f"mean {statistics.mean(scores):.2f}%" in source
    main(["report", "--study", "t", "-o", "REPORT.md"])  # the report shows the confirmation and its choice
    report = (tmp_path / "REPORT.md").read_text()
    assert "**Confirmation**" in report and f"confirmed choice (`budgetnas export --confirmed`) is trial {chosen.number}," in report
    with pytest.raises(SystemExit):
        main(["confirm", "--study", "t", "--top", "0", "--data-dir", str(data_root)])
    assert "argument --top: must be a whole number in [1, " in capsys.readouterr().err


def test_confirm_needs_a_completed_trial(data_root, tmp_path, capsys):
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name="t", storage="sqlite:///studies/t.db", direction="maximize")
    with pytest.raises(SystemExit):
        main(["confirm", "--study", "t", "--data-dir", str(data_root)])
    assert "no completed trial to confirm" in capsys.readouterr().err
