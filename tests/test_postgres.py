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
