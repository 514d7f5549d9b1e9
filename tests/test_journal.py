"""A journal file after its writer died: a torn last line and a stale lock must not lose the study."""

import os
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution

from budgetnas.search.study import storage as S


def add(study, x):
    study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": FloatDistribution(0, 1)},
                                              value=x))


def test_a_torn_last_line_is_moved_aside_and_the_study_goes_on(tmp_path):
    path = tmp_path / "j.journal"
    study = optuna.create_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    for x in (0.1, 0.2, 0.3):
        add(study, x)
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])  # a crash in the middle of the last write
    study = optuna.load_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    add(study, 0.4)  # before the fix this append followed the torn line and every later read failed
    again = optuna.load_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    assert [t.params["x"] for t in again.trials][-1] == 0.4 and len(again.trials) >= 3
    assert (tmp_path / "j.journal.torn").read_bytes().strip() == whole[:-40][whole[:-40].rfind(b"\n") + 1:]


def test_a_lock_left_by_a_killed_writer_is_broken(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "JOURNAL_LOCK_GRACE", 3)
    path = tmp_path / "j.journal"
    study = optuna.create_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    add(study, 0.5)
    os.chdir(tmp_path)
    os.symlink("j.journal", "j.journal.lock")  # what a writer killed while holding the lock leaves (relative, as before)
    t0 = time.monotonic()
    study = optuna.load_study(study_name="j", storage=S.make_storage("journal:j.journal"))
    add(study, 0.6)
    assert time.monotonic() - t0 < 30 and len(study.trials) == 2


@pytest.mark.parametrize("url", ["journal:j.journal", "sqlite:///s.db"])
def test_a_resumed_study_does_not_propose_its_first_trials_again(tmp_path, url):
    from budgetnas.search.study.config import StudyConfig, open_study
    from budgetnas.space import ShapeError, sample_arch

    def sample(trial):
        try:
            sample_arch(trial, cfg.space)
        except ShapeError:  # a shape that vanishes: the params drawn so far are what we compare
            pass
        return trial.params

    cfg = StudyConfig(name="r", storage=url, warm_start=False)
    study = open_study(cfg)
    first = []
    for _ in range(3):
        t = study.ask()
        first.append(sample(t))
        study.tell(t, 0.0)
    resumed = open_study(cfg)
    assert sample(resumed.ask()) not in first


def test_a_full_disk_mid_write_loses_no_study(small_disk):
    path = small_disk / "j.journal"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - 6000))
    study = optuna.create_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    with pytest.raises(OSError):
        for i in range(1000):
            add(study, i / 1000)
    filler.unlink()  # the user frees space, then resumes
    study = optuna.load_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    n = len(study.trials)
    add(study, 0.999)
    again = optuna.load_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    assert len(again.trials) == n + 1 and again.trials[-1].params["x"] == 0.999
