"""Damaged storage: a journal garbled in the middle, a SQLite file with bytes overwritten, a
read-only SQLite file or folder, two processes creating one SQLite file. Each is one line that
names the file (exit 2), or, for the journal, a resume that says what it moved aside."""

import multiprocessing
import os
import shutil
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution

from budgetnas.search.study import storage as S
from budgetnas.search.study.config import StudyConfig, open_study
from tests.conftest import assert_one_line_error


def add(study, x):
    study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": FloatDistribution(0, 1)},
                                              value=x))


def garble(path, number, how):
    """Overwrite bytes inside line `number` (1-based), as a bad sector or a stray write would."""
    lines = path.read_bytes().split(b"\n")
    line = lines[number - 1]
    lines[number - 1] = line[:8] + how + line[8 + len(how):]
    path.write_bytes(b"\n".join(lines))
    return lines


# not UTF-8 (Optuna: UnicodeDecodeError), or UTF-8 but not JSON (JSONDecodeError)
GARBLE = {"bytes": b"\xff\xfe\x00\x17", "json": b'}}:,"'}


@pytest.mark.parametrize("how", GARBLE.values(), ids=GARBLE.keys())
def test_a_damaged_journal_line_is_cut_there_and_the_rest_moved_aside(tmp_path, capsys, how):
    path = tmp_path / "j.journal"
    study = optuna.create_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    for x in (0.1, 0.2, 0.3, 0.4, 0.5):
        add(study, x)
    n = len(path.read_bytes().splitlines())
    lines = garble(path, 4, how)
    (tmp_path / "j.journal.damaged").write_bytes(b"an earlier cut\n")  # never overwritten
    capsys.readouterr()
    study = optuna.load_study(study_name="j", storage=S.make_storage(f"journal:{path}"))  # before: a bare decode error
    assert path.read_bytes() == b"\n".join(lines[:3]) + b"\n"  # every record before the bad line
    assert (tmp_path / "j.journal.damaged.1").read_bytes() == b"\n".join(lines[3:])  # the rest, bad line first
    assert (tmp_path / "j.journal.damaged").read_bytes() == b"an earlier cut\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: line 4 is damaged" in err[0] and f"moved {n - 3} lines" in err[0]
    assert "j.journal.damaged.1" in err[0] and "no longer in the study" in err[0]
    kept = len(study.trials)
    add(study, 0.9)  # the study goes on from the kept records
    again = optuna.load_study(study_name="j", storage=S.make_storage(f"journal:{path}"))
    assert len(again.trials) == kept + 1 and again.trials[-1].params["x"] == 0.9
    assert capsys.readouterr().err == ""  # nothing more to cut


def test_status_of_a_study_whose_journal_is_damaged_says_what_it_moved(tmp_path, cli):
    path = tmp_path / "s.journal"
    study = open_study(StudyConfig(name="s", storage=f"journal:{path}"))  # baselines enqueued, then stamped
    setup = len(path.read_bytes().splitlines())
    for i in range(5):  # records after the set-up: one of them is damaged below
        study.set_user_attr(f"note{i}", i)
    n = len(path.read_bytes().splitlines())
    garble(path, setup + 2, GARBLE["bytes"])
    result = cli("status", "--study", "s", "--storage", f"journal:{path}", cwd=tmp_path)
    assert result.returncode == 0 and "study s:" in result.stdout, result.stderr  # before: internal error, exit 70
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and f"{path}: line {setup + 2} is damaged" in err[0] and f"moved {n - setup - 1} lines" in err[0]


def sqlite_study(tmp_path, name="t"):
    """A finished study's SQLite file, closed: no -wal left holding pages newer than the file's."""
    url = f"sqlite:///{tmp_path}/{name}.db"
    storage = S.make_storage(url, heartbeat=None)
    open_study(StudyConfig(name=name, storage=url), storage=storage)  # its baselines enqueued
    storage.engine.dispose()
    assert not (tmp_path / f"{name}.db-wal").exists()
    return tmp_path / f"{name}.db", url


# the header: SQLite's "file is not a database"; the second page, past the header: only a query that
# reads it fails, with "database disk image is malformed" (before: Optuna's internal error in `status`)
DAMAGE = {"header": (0, b"\0" * 100), "page-2": (4096, b"\xa5" * 4096)}


@pytest.mark.parametrize("where", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_sqlite_file_is_one_line_naming_it(tmp_path, data_root, cli, where):
    path, url = sqlite_study(tmp_path)
    with open(path, "r+b") as f:
        f.seek(where[0])
        f.write(where[1])
    assert_one_line_error(cli("status", "--study", "t", "--storage", url, cwd=tmp_path), f"{path} is damaged")
    search = ["search", "--study", "t", "--storage", url, "--trials", "1", "--epochs", "1", "--subset", "200",
              "--val-size", "200", "--data-dir", str(data_root)]
    assert_one_line_error(cli(*search, cwd=tmp_path), f"{path} is damaged")


def without_root_powers(*args, cwd):
    """`budgetnas ARGS` in a process for which file modes hold: root's override of them dropped
    (root reads and writes a mode-0444 file; these tests run as root on CI)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root, and no setpriv to drop root's override of file modes")
        drop = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode:
            pytest.skip("running as root, and setpriv cannot drop root's override of file modes here")
    return subprocess.run([*prefix, sys.executable, "-m", "budgetnas.search.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False)


def test_a_read_only_sqlite_file_is_refused_before_it_is_opened(tmp_path):
    path, url = sqlite_study(tmp_path)
    path.chmod(0o444)
    # before: `status` read it, and left -wal/-shm files as read-only as it, which broke every later
    # write (Optuna's "invalid data in the commit") even after the file's mode was fixed
    assert_one_line_error(without_root_powers("status", "--study", "t", "--storage", url, cwd=tmp_path),
                          f"{path} is read-only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]  # nothing made beside it
    path.chmod(0o644)
    assert without_root_powers("status", "--study", "t", "--storage", url, cwd=tmp_path).returncode == 0


def test_a_sqlite_file_in_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path, url = sqlite_study(folder)
    folder.chmod(0o555)
    try:
        result = without_root_powers("status", "--study", "t", "--storage", url, cwd=tmp_path)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(result, f"{path} is read-only: its folder {folder} is not writable")


def create(url, barrier, results):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    barrier.wait(timeout=60)  # all at once, on a file none of them has made yet
    try:
        optuna.create_study(study_name="r", storage=S.make_storage(url), load_if_exists=True)
        results.put("ok")
    except S.StorageError as e:  # before: "table studies already exists" for the loser
        results.put(str(e))


def test_processes_creating_one_sqlite_study_at_once_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    url, n = f"sqlite:///{tmp_path}/r.db", 3
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=create, args=(url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert got == ["ok"] * n


def test_the_loser_of_a_race_to_create_a_sqlite_file_tries_again(tmp_path, monkeypatch):
    """The race made certain: the other process makes the tables after this one looked for them."""
    from optuna.storages._rdb import models

    metadata = models.BaseModel.metadata
    create_all, calls = metadata.create_all, []

    def racing(engine, **kw):
        calls.append(engine)
        if len(calls) == 1:
            create_all(engine)  # the winner's
            create_all(engine, checkfirst=False)  # the loser's, not looking again: "table ... already exists"
        create_all(engine, **kw)

    monkeypatch.setattr(metadata, "create_all", racing)
    storage = S.make_storage(f"sqlite:///{tmp_path}/r.db", heartbeat=None)
    assert len(calls) == 2 and optuna.create_study(study_name="r", storage=storage).trials == []


def test_the_loser_of_a_race_to_stamp_the_schema_version_tries_again(tmp_path, monkeypatch):
    """One step later in the same race: both found no version row, the other process wrote it first."""
    import sqlalchemy
    from optuna.storages._rdb.storage import _VersionManager

    stamp, calls = _VersionManager._set_alembic_revision, []

    def racing(self, revision):
        calls.append(revision)
        stamp(self, revision)  # the winner's row, written after this one looked
        with self.engine.begin() as connection:  # this one's, as alembic's stamp writes it having seen none
            connection.execute(sqlalchemy.text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision})

    monkeypatch.setattr(_VersionManager, "_set_alembic_revision", racing)
    storage = S.make_storage(f"sqlite:///{tmp_path}/r.db", heartbeat=None)
    assert len(calls) == 1 and optuna.create_study(study_name="r", storage=storage).trials == []
