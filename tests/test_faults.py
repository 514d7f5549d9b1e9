"""A worker killed with SIGKILL in the middle of a trial: the study goes on, the dead trial
ends FAIL and is retried by the next worker, no completed trial is lost or duplicated."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from budgetnas.search.study.storage import make_storage
from budgetnas.search.study.workers import alive

CONFIG = """
[study]
name = "k"
budget = 100000
epochs = {epochs}
val_size = 200
warm_start = false
heartbeat = 1
storage = "{storage}"
[space]
stages = [2, 2]
convs = [1, 1]
channels = [8, 8]
bn = [true]
head = ["gap"]
optimizer = ["adam"]
lr = [0.01, 0.01]
batch_size = [64]
"""


STORAGES = {"sqlite": "sqlite:///k.db", "journal": "journal:k.journal"}


# A worker killed at a stated point, not at a polled moment a loaded machine may let pass: right
# after its trial reports its first epoch (stored as a RUNNING trial with a history).
KILLED_AFTER_AN_EPOCH = """
import os, signal, sys
import optuna
from budgetnas.search.cli import main

report = optuna.trial.Trial.report

def report_then_die(self, value, step):
    report(self, value, step)
    os.kill(os.getpid(), signal.SIGKILL)

optuna.trial.Trial.report = report_then_die
main(sys.argv[1:])
"""


def worker(tmp_path, data_root, trials, log, die=False):
    entry = ["-c", KILLED_AFTER_AN_EPOCH] if die else ["-m", "budgetnas.search.cli"]
    return subprocess.Popen([sys.executable, *entry, "search", "--config", "k.toml", "--trials", str(trials),
                             "--data-dir", str(data_root), "--threads", "1"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)


def load(tmp_path, storage):
    url = {"sqlite": f"sqlite:///{tmp_path}/k.db", "journal": f"journal:{tmp_path}/k.journal"}[storage]
    return optuna.load_study(study_name="k", storage=make_storage(url, None))


def wait_for_training(tmp_path, storage, proc, log_path, seconds=180):
    """Until a trial is RUNNING with an epoch done; one storage for all polls (each new one checks the schema)."""
    study, deadline = None, time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, f"worker exited early: {log_path.read_text()[-500:]}"
        time.sleep(0.5)
        try:
            study = study or load(tmp_path, storage)
        except KeyError:  # the database exists but the study is not created yet
            continue
        if any(t.state == TrialState.RUNNING and t.user_attrs.get("history") for t in study.trials):
            return
    raise AssertionError(f"no trial trained an epoch within {seconds} s: {log_path.read_text()[-500:]}")


@pytest.mark.parametrize("storage", STORAGES)
def test_killed_worker_trial_is_failed_and_retried(tmp_path, data_root, storage):
    """SQLite: heartbeats stop, the next worker fails and retries the trial (Optuna's callback).
    Journal: no heartbeats; the next worker sees the trial's process is gone (runner.fail_orphans)."""
    (tmp_path / "k.toml").write_text(CONFIG.format(epochs=3, storage=STORAGES[storage]))
    log_path = tmp_path / "workers.log"
    with log_path.open("w") as log:
        first = worker(tmp_path, data_root, 1, log, die=True)
        assert first.wait(timeout=300) == -signal.SIGKILL, log_path.read_text()[-500:]
        running = [t for t in load(tmp_path, storage).trials if t.state == TrialState.RUNNING]
        assert len(running) == 1 and len(running[0].user_attrs["history"]) == 1  # killed mid-training
        time.sleep(5 if storage == "sqlite" else 0)  # past the grace period (4 missed heartbeats of 1 s)
        second = worker(tmp_path, data_root, 1, log)
        assert second.wait(timeout=300) == 0, log_path.read_text()[-500:]
    ts = load(tmp_path, storage).trials
    dead, retried = ts[0], ts[1]
    assert dead.state == TrialState.FAIL
    retry_of = retried.system_attrs.get("failed_trial", retried.user_attrs.get("retry_of"))
    assert retried.state == TrialState.COMPLETE and retry_of == dead.number
    assert retried.params == dead.params
    assert len(ts) == 2 and len({t.number for t in ts}) == 2
    assert len(retried.user_attrs["history"]) == 3  # the config's epochs, trained again in full


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_parent_stops_its_workers(tmp_path, data_root, sig):
    """`kill PID` (or SIGINT to the parent alone) stops every worker: each running trial ends
    FAIL, no worker is left training, and the exit is one line, not a traceback per worker."""
    (tmp_path / "k.toml").write_text(CONFIG.format(epochs=40, storage=STORAGES["journal"]))  # still training when stopped
    log_path = tmp_path / "workers.log"
    with log_path.open("w") as log:
        parent = subprocess.Popen([sys.executable, "-m", "budgetnas.search.cli", "search", "--config", "k.toml", "--trials", "4",
                                   "--workers", "2", "--data-dir", str(data_root)],
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        wait_for_training(tmp_path, "journal", parent, log_path)
        parent.send_signal(sig)
        assert parent.wait(timeout=60) == 130
    out = log_path.read_text()
    assert "Traceback" not in out and "budgetnas: interrupted" in out, out[-1000:]
    trials = load(tmp_path, "journal").trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert any(t.state == TrialState.FAIL for t in trials), "no running trial was stopped"
    pids = {int(t.user_attrs["worker"].rpartition(":")[2]) for t in trials}
    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "a worker outlived its parent"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_trial_no_worker_stamped_is_gone_when_every_process_that_joined_before_it_is():
    """A process killed between asking a trial and stamping it: whose the trial can be is every
    process that joined the study before it began; a live one (or another machine's) keeps it."""
    import datetime

    from budgetnas.search.study.workers import worker_gone

    here = socket.gethostname()
    began = datetime.datetime.now()
    trial = optuna.trial.create_trial(state=TrialState.RUNNING)
    trial.datetime_start = began
    before, after = began.timestamp() - 1, began.timestamp() + 1
    dead, live = f"{here}:{dead_pid()}", f"{here}:{os.getpid()}"
    assert worker_gone(trial, {}) and worker_gone(trial, {dead: before, live: after})
    assert not worker_gone(trial, {dead: before, live: before})
    assert not worker_gone(trial, {dead: before, "another-machine:1": before})
    assert not worker_gone(optuna.trial.create_trial(state=TrialState.FAIL), {})  # only RUNNING ones are judged


@pytest.mark.parametrize("url", ["sqlite:///o.db", "journal:o.journal"])
def test_a_dead_workers_trials_are_failed_at_once_and_retried_once(tmp_path, url):
    import socket

    from optuna.distributions import FloatDistribution

    from budgetnas.search.study.workers import fail_orphans

    os.chdir(tmp_path)
    study = optuna.create_study(study_name="o", storage=make_storage(url, 30))
    worker = f"{socket.gethostname()}:{dead_pid()}"
    running = study.ask({"x": FloatDistribution(0, 1)})  # killed mid-trial: RUNNING, its heartbeat not yet stale
    study._storage.set_trial_user_attr(running._trial_id, "worker", worker)
    stopped = study.ask({"x": FloatDistribution(0, 1)})  # stopped by Ctrl-C: Optuna ended it FAIL
    study._storage.set_trial_user_attr(stopped._trial_id, "worker", worker)
    study.tell(stopped, state=TrialState.FAIL)
    fail_orphans(study)
    fail_orphans(study)  # a second resume: nothing retried twice
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.FAIL, TrialState.FAIL] and states[2:] == [TrialState.WAITING] * 2
    assert sorted(t.user_attrs["retry_of"] for t in study.trials[2:]) == [0, 1]


def test_a_worker_that_died_is_one_line_not_a_traceback(tmp_path, data_root, monkeypatch):
    from budgetnas.search.study import workers as runner
    from budgetnas.search.study.config import StudyConfig, StudyError

    class Dead:  # a worker the kernel killed (out of memory): exit code -9, no trial run
        def __init__(self, *args, **kwargs):
            self.pid, self.exitcode = 1, -9

        def start(self):
            pass

        def join(self):
            pass

    class Context:
        Process = Dead

    os.chdir(tmp_path)
    monkeypatch.setattr(runner.multiprocessing, "get_context", lambda kind: Context)
    cfg = StudyConfig(name="w", storage="journal:w.journal", data_dir=str(data_root), val_size=200, trials=2)
    with pytest.raises(StudyError, match=r"2 worker\(s\) died \(exit codes \[-9, -9\]"):
        runner.run_workers(cfg, workers=2)


class Finished:  # a worker process that ran its share and exited 0, without being started
    def __init__(self, *args, **kwargs):
        self.pid, self.exitcode = 1, 0

    def start(self):
        pass

    def join(self):
        pass


def test_workers_of_a_new_study_say_created_the_warm_starts_queued_and_the_total(tmp_path, data_root, monkeypatch,
                                                                                capsys):
    """Once, by the parent: not 'resumed with 4 trials' (its own warm starts) nor a worker's share of the trials."""
    from budgetnas.search.study import workers as runner
    from budgetnas.search.study.config import StudyConfig
    from budgetnas.space import SpaceConfig

    os.chdir(tmp_path)
    monkeypatch.setattr(runner.multiprocessing, "get_context", lambda kind: type("Context", (), {"Process": Finished}))
    cfg = StudyConfig(name="w", storage="journal:w.journal", data_dir=str(data_root), val_size=200, trials=6,
                      warm_start=True, space=SpaceConfig(), budget=8000)
    runner.run_workers(cfg, workers=2)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "study w: created in journal:w.journal; 4 warm starts queued; up to 6 more trials shared by 2 workers"
    study = optuna.load_study(study_name="w", storage=make_storage(f"journal:{tmp_path}/w.journal", None))
    study.tell(study.ask(), 99.0)  # one trial run (the first warm start's), three still queued
    runner.run_workers(replace(cfg, trials=3), workers=2)
    assert capsys.readouterr().out.splitlines()[1] == ("study w: resumed with 1 trials in journal:w.journal; 3 queued; "
                                                       "up to 3 more trials shared by 2 workers")


def fill(disk) -> None:
    free = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_is_one_line_a_worker_not_a_traceback(tmp_path, data_root, small_disk, monkeypatch, capfd, workers):
    """Two workers meet the full disk as they open the study; one, in this process, mid-trial (Optuna
    then raises "Should not reach" from the storage's error as the trial is told)."""
    from budgetnas.search.study import workers as runner
    from budgetnas.search.study.config import StudyConfig, StudyError

    def then_fill(f):
        def filled(*args, **kwargs):
            out = f(*args, **kwargs)
            fill(small_disk)
            return out
        return filled

    if workers > 1:
        monkeypatch.setattr(runner, "open_study", then_fill(runner.open_study))
    else:  # the objective trains, then the disk is full
        make_objective = runner.make_objective
        monkeypatch.setattr(runner, "make_objective", lambda **kw: then_fill(make_objective(**kw)))
    os.chdir(tmp_path)
    cfg = StudyConfig(name="f", storage=f"journal:{small_disk}/f.journal", data_dir=str(data_root), val_size=200,
                      trials=4, epochs=1, warm_start=False)
    with pytest.raises(OSError if workers == 1 else StudyError) as e:  # budgetnas main: one line, exit 2
        runner.run_workers(cfg, workers=workers)
    out = capfd.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "Should not reach" not in text, text[-2000:]
    if workers == 1:
        assert e.value.errno == errno.ENOSPC
    else:
        assert str(e.value).startswith("2 worker(s) stopped on the error above")
        said = [line for line in out.err.splitlines() if line.startswith("worker ")]
        assert len(said) == 2 and all("No space left on device" in line for line in said), out.err


def test_status_shows_a_running_trial_whose_worker_is_gone_as_stale(tmp_path, cli):
    """After kill -9 of a search's workers their trials stay RUNNING in the storage until a resume:
    `status` says they are stale, not running."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that was a process of this machine and is no more
    from budgetnas.search.study.config import StudyConfig, open_study

    study = open_study(StudyConfig(name="s", budget=3000, val_size=100, storage="journal:s.journal"))
    running = study.ask()
    study._storage.set_trial_user_attr(running._trial_id, "worker", f"{socket.gethostname()}:{dead.pid}")
    result = cli("status", "--study", "s", "--storage", "journal:s.journal", cwd=tmp_path)
    out = result.stdout
    assert "1 stale (RUNNING, worker gone: trial 0" in out, result.stderr


def test_a_dead_process_not_yet_reaped_is_not_alive():
    """A killed worker whose parent has not waited for it yet (a zombie) is gone: its trials are failed."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while alive(child.pid) and time.time() < deadline:  # it ends; nobody reaps it yet
        time.sleep(0.05)
    assert not alive(child.pid) and child.poll() == 0  # poll() reaps it: now it is not there at all
    assert alive(os.getpid())
