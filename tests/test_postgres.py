"""Many machines, one study: a real PostgreSQL server on loopback, two worker processes.

The server is Debian's `postgresql` package (installed by .ci/run), started here in a
temporary folder on a free port and stopped afterwards. Without it or without psycopg the
test is skipped, except where BUDGETNAS_REQUIRE_POSTGRES=1 (CI), where it fails.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import optuna
import pytest
from optuna.trial import TrialState

from budgetnas.search.study.storage import make_storage
from tests.conftest import write_idx_dataset

CONFIG = """
[study]
name = "pg"
budget = 100000
epochs = 2
val_size = 200
warm_start = false
storage = "{url}"
[space]
stages = [2, 2]
convs = [1, 2]
channels = [4, 8]
"""


def missing(reason):
    if os.environ.get("BUDGETNAS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here: {reason}")
    pytest.skip(reason)


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install 'budgetnas[postgres]')")
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        missing("no initdb/pg_ctl (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    root = tempfile.mkdtemp(prefix="budgetnas-pg-")
    if as_user:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), free_port()
    subprocess.run([*as_user, initdb, "-D", data, "-U", "budgetnas", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", data, "-l", os.path.join(root, "log"), "-w", "start", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        yield f"postgresql://budgetnas@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgres_study(tmp_path, data_root, postgres_url):
    (tmp_path / "pg.toml").write_text(CONFIG.format(url=postgres_url))
    out = subprocess.run([sys.executable, "-m", "budgetnas.search.cli", "search", "--config", "pg.toml", "--workers", "2",
                          "--trials", "8", "--data-dir", str(data_root)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    trials = optuna.load_study(study_name="pg", storage=make_storage(postgres_url, None)).trials
    numbers = [t.number for t in trials]
    assert len(trials) == 8 and sorted(numbers) == list(range(8))  # unique, none lost
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, [t.state for t in trials]
    for t in complete:  # stored whole: value, the model, its size, every epoch, the time it took
        assert t.values and {"arch", "params", "history", "seconds"} <= t.user_attrs.keys()
        assert len(t.user_attrs["history"]) == 2 and sorted(t.intermediate_values) == [1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials


def all_trials(url, name):
    storage = make_storage(url, None)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(name)]
    return {n: optuna.load_study(study_name=n, storage=storage).trials for n in names}


def test_a_joined_worker_killed_mid_training_loses_nothing(tmp_path, postgres_url):
    """A drill and `budgetnas join` in two folders sharing only the PostgreSQL URL (and the images):
    both train; the joined one is killed with -9 while it trains; the drill ends, and every
    training is complete once or given back (FAIL), none left RUNNING or run twice."""
    import socket
    import time

    data = tmp_path / "data"
    write_idx_dataset(data)
    leader_dir, joiner_dir = tmp_path / "leader", tmp_path / "joiner"
    leader_dir.mkdir()
    joiner_dir.mkdir()
    cli = [sys.executable, "-m", "budgetnas.search.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    name = "joined"
    leader = subprocess.Popen([*cli, "drill", "--name", name, "--budget", "3000", "--hours", "0.035", "--epochs", "2",
                               "--val-size", "300", "--seeds", "2", "--workers", "1", "--storage",
                               postgres_url, "--data-dir", str(data), "--threads", "1"], cwd=leader_dir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while name not in all_trials(postgres_url, name):  # the leader has made its drill
            assert leader.poll() is None and time.monotonic() < deadline, leader.stdout.read()
            time.sleep(0.5)
        joiner = subprocess.Popen([*cli, "join", "--name", name, "--storage", postgres_url, "--workers", "1",
                                   "--data-dir", str(data), "--threads", "1"], cwd=joiner_dir, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        me = f"{socket.gethostname()}:{joiner.pid}"
        held = None
        while held is None:  # the joined worker has completed a training and is on the next one: kill it
            assert leader.poll() is None and time.monotonic() < deadline, "the drill ended before the joiner trained"
            trials = [(n, t) for n, ts in all_trials(postgres_url, name).items() for t in ts
                      if t.user_attrs.get("worker") == me]
            if any(t.state == TrialState.COMPLETE for _, t in trials):
                held = next(((n, t.number) for n, t in trials if t.state == TrialState.RUNNING), None)
            time.sleep(0.2)
        joiner.kill()
        joiner.wait()
        out, _ = leader.communicate(timeout=600)
    finally:
        for p in (leader, locals().get("joiner")):
            if p is not None and p.poll() is None:
                p.kill()
    assert leader.returncode == 0, out[-3000:]
    studies = all_trials(postgres_url, name)
    by_worker = {t.user_attrs.get("worker") for ts in studies.values() for t in ts if t.state == TrialState.COMPLETE}
    assert me in by_worker and f"{socket.gethostname()}:{leader.pid}" in by_worker  # both trained
    assert next(t for t in studies[held[0]] if t.number == held[1]).state == TrialState.FAIL  # given back
    assert not [t for ts in studies.values() for t in ts if t.state == TrialState.RUNNING]
    keys = [t.user_attrs["key"] for t in studies[f"{name}/seeds"] if t.state == TrialState.COMPLETE]
    assert sorted(keys) == sorted(set(keys)) and {"verify/seed0", "verify/seed1"} <= set(keys)  # each seed trained once
