"""One drill at a time per name: a live drill's lock refuses a second, a dead one's is broken, and
the lock goes when the drill ends, however it ends."""

import json
import os
import socket
import subprocess
import sys

import pytest

from budgetnas.search.drill import run as drill_module
from budgetnas.search.drill.config import DrillConfig
from budgetnas.search.drill.lock import drill_lock
from budgetnas.search.drill.plan import plan
from budgetnas.search.drill.run import Drill
from budgetnas.search.engine.results import studies_root
from budgetnas.search.study.config import StudyError

HOST = socket.gethostname()


def locked(folder, pid, host=HOST):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "drill.lock").write_text(json.dumps({"pid": pid, "host": host}))
    return folder / "drill.lock"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_drills_lock_refuses_a_second(tmp_path):
    path = locked(tmp_path / "x", os.getpid())
    with pytest.raises(StudyError, match=rf"already running \(pid {os.getpid()} on host {HOST}"), drill_lock(tmp_path / "x"):
        pass
    assert json.loads(path.read_text())["pid"] == os.getpid()  # not the refused drill's to remove


def test_another_hosts_lock_is_respected(tmp_path):
    path = locked(tmp_path / "x", dead_pid(), host="elsewhere")  # its pid means nothing here
    with pytest.raises(StudyError, match="pid .* on host elsewhere .*remove that file"), drill_lock(tmp_path / "x"):
        pass
    assert path.exists()


def test_a_dead_drills_lock_is_broken_and_the_drill_goes_on(tmp_path):
    pid = dead_pid()
    path = locked(tmp_path / "x", pid)
    said = []
    with drill_lock(tmp_path / "x", log=said.append):
        assert json.loads(path.read_text()) == {"pid": os.getpid(), "host": HOST}
    assert len(said) == 1 and f"pid {pid}" in said[0] and not path.exists()


@pytest.fixture
def drill(data_root, monkeypatch):
    """A drill whose plan is stored and whose stages are `STAGES` below: no training."""
    cfg = DrillConfig(name="d", data_dir=str(data_root), budget=3000, hours=0.01, epochs=2, val_size=300, workers=1)
    cfg.folder.mkdir(parents=True)  # an existing folder: the drill is not timed as it opens
    d = Drill(cfg, log=lambda line: None)
    d.write("plan", plan(cfg, n_train=900, n_full=1200, sec_search=1e-5, sec_verify=1e-5))
    monkeypatch.setattr(drill_module, "STAGES", {})
    return d


def test_the_lock_is_held_while_the_drill_runs_and_gone_after(drill, monkeypatch):
    path = drill.cfg.folder / "drill.lock"
    held = []
    monkeypatch.setitem(drill_module.STAGES, "explore", lambda d: held.append(json.loads(path.read_text())))
    drill.run()
    assert held == [{"pid": os.getpid(), "host": HOST}] and not path.exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_gone_after_a_drill_that_failed_or_was_interrupted(drill, monkeypatch, error):
    def stage(d):
        raise error("stopped")

    monkeypatch.setitem(drill_module.STAGES, "explore", stage)
    with pytest.raises(error):
        drill.run()
    assert not (drill.cfg.folder / "drill.lock").exists()


def test_a_second_drill_of_the_same_name_is_one_line_exit_2(data_root, capsys):
    from budgetnas.search.cli import main

    path = locked(studies_root() / "d", os.getpid())  # a live drill of that name
    with pytest.raises(SystemExit) as e:
        main(["drill", "--name", "d", "--budget", "3000", "--epochs", "2", "--val-size", "300", "--workers", "1",
              "--data-dir", str(data_root)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("budgetnas: error: drill 'd' is already running") and f"pid {os.getpid()}" in err
    assert path.exists()
