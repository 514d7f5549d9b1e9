"""A worker killed with SIGKILL in the middle of a trial: the study goes on, the dead trial
ends FAIL and is retried by the next worker, no completed trial is lost or duplicated."""

import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from search.study import make_storage

CONFIG = """
[study]
name = "k"
budget = 100000
epochs = 40
val_size = 200
warm_start = false
heartbeat = 1
storage = "sqlite:///k.db"
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


def worker(tmp_path, data_root, trials):
    return subprocess.Popen([sys.executable, "-m", "search.cli", "search", "--config", "k.toml", "--trials",
                             str(trials), "--data-dir", str(data_root), "--threads", "1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trials(tmp_path):
    try:
        return optuna.load_study(study_name="k", storage=make_storage(f"sqlite:///{tmp_path}/k.db", None)).trials
    except KeyError:  # the database exists but the worker has not created the study in it yet
        return []


def test_killed_worker_trial_is_failed_and_retried(tmp_path, data_root):
    (tmp_path / "k.toml").write_text(CONFIG)
    first = worker(tmp_path, data_root, trials=1)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the trial is running and has trained an epoch
        time.sleep(0.5)
        if (tmp_path / "k.db").exists() and any(t.state == TrialState.RUNNING and t.user_attrs.get("history")
                                                for t in trials(tmp_path)):
            break
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(5)  # past the grace period (4 missed heartbeats of 1 s)
    second = worker(tmp_path, data_root, trials=1)
    assert second.wait(timeout=300) == 0
    ts = trials(tmp_path)
    dead, retried = ts[0], ts[1]
    assert dead.state == TrialState.FAIL
    assert retried.state == TrialState.COMPLETE and retried.system_attrs["failed_trial"] == dead.number
    assert retried.params == dead.params
    assert len(ts) == 2 and len({t.number for t in ts}) == 2
    assert len(retried.user_attrs["history"]) == 40
