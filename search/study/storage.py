"""Optuna storages by URL: sqlite:///FILE (the default of `search`), journal:FILE (the drill's;
several processes on one machine), postgresql:// or mysql:// (many machines, with heartbeats);
their checks, SQLite's pragmas and a journal that survives `kill -9`."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import socket
import sqlite3
import sys
import time
import warnings
from contextlib import closing
from pathlib import Path

import optuna

from ...space.errors import BadInput
from ..engine.results import studies_root


class StorageError(BadInput):
    """A storage URL that is malformed, names no file, or cannot be opened; one line."""


def redact(url: str | None) -> str | None:
    """A storage URL fit to print or store: its password replaced by ***."""
    return url if url is None else re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def default_storage(name: str) -> str:
    return f"sqlite:///{studies_root() / name}.db"


def storage_file(url: str) -> Path | None:
    """The local file behind a sqlite:/// or journal: URL; None for a database server."""
    for prefix in ("journal:", "sqlite:///"):
        if url.startswith(prefix):
            if not url.removeprefix(prefix).strip() or url.removeprefix(prefix).endswith("/"):
                raise StorageError(f"storage {url!r} names no file (an empty path would be an in-memory database, "
                                 f"lost at exit): give {prefix}FILE.")
            return Path(url.removeprefix(prefix))
    if url.startswith(("postgresql", "mysql")):
        return None
    raise StorageError(f"storage must be sqlite:///FILE, postgresql://..., mysql://... or journal:FILE, but got {redact(url)!r}.")


def check_storage_url(url: str) -> Path | None:
    """Syntax and folder checks only: nothing is opened or created. Returns `storage_file(url)`."""
    path = storage_file(url)
    if path is not None and not path.parent.exists() and studies_root() not in path.parents:  # made on demand
        raise StorageError(f"storage {url!r}: folder {path.parent} does not exist.")
    return path


@functools.cache
def fast_sqlite() -> None:
    """WAL + synchronous=NORMAL on every SQLite connection: a commit no longer waits for an fsync,
    which dominated the cost of an over-budget trial (one commit per suggested parameter). Safe
    against a crashed process; only a power cut can lose the last commits."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


JOURNAL_LOCK_GRACE = 10  # seconds a journal's lock may go untouched before it is taken as its dead holder's


def journal_backend(path: Path):
    """A journal file, safe to reopen after its writer was killed (`kill -9`, a crash, a full disk).

    Its path is made absolute: Optuna's lock is a symlink to it, and a relative target made a
    stale lock unbreakable (the waiter looped forever). A lock left by a dead writer is broken
    after JOURNAL_LOCK_GRACE s. A torn last line (a write cut short) is moved aside, under the
    lock, to FILE.torn, or the next append would follow it and make the whole file unreadable;
    a damaged line before it, and all after it, to FILE.damaged (`cut_damaged`)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    path = path.resolve()
    lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE)
    if path.exists() and path.stat().st_size:
        lock.acquire()
        try:
            with open(path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.seek(0)
                    data = f.read()
                    keep = data.rfind(b"\n") + 1
                    with open(f"{path}.torn", "ab") as torn:
                        torn.write(data[keep:] + b"\n")
                    f.truncate(keep)
                cut_damaged(path, f)
        finally:
            lock.release()
    return JournalFileBackend(str(path), lock_obj=lock)


def is_record(line: bytes) -> bool:
    """A journal line Optuna can replay: a JSON object with an op_code."""
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        return False
    return isinstance(record, dict) and "op_code" in record


def cut_damaged(path: Path, f) -> None:
    """Keep the journal's records before its first damaged line (bytes overwritten on disk, a
    bad sector); move that line and every one after it to FILE.damaged (.1, .2, ... if taken).

    Optuna fails on such a line with a bare JSONDecodeError/UnicodeDecodeError on every later
    read, naming neither the file nor the line. A prefix of a journal is a consistent study:
    what it loses are the records after the bad line, kept in the .damaged file. Called under
    the journal's lock with `f` open rb+ on a file that ends in a newline."""
    f.seek(0)
    data = f.read()
    keep = 0
    lines = data.split(b"\n")[:-1]  # split on \n only, as Optuna reads it (not on \r)
    for number, line in enumerate(lines, 1):
        if not is_record(line):
            break
        keep += len(line) + 1
    else:
        return
    for n in itertools.count():
        aside = Path(f"{path}.damaged" + (f".{n}" if n else ""))
        try:
            with open(aside, "xb") as out:
                out.write(data[keep:])
                out.flush()
                os.fsync(out.fileno())  # on disk before the journal loses them
            break
        except FileExistsError:  # an earlier cut's: never overwritten
            continue
    # one truncate is atomic (a crash leaves the old or the new length) and keeps the file's
    # owner, mode and inode, which a copy put in its place by os.replace would not
    f.truncate(keep)
    f.flush()
    os.fsync(f.fileno())
    moved = len(lines) - number + 1
    print(f"budgetnas: warning: {path}: line {number} is damaged (not a journal record): kept the {number - 1} lines "
          f"before it, moved {moved} lines (line {number} to the end) to {aside}; the trials they recorded are no "
          "longer in the study, only in that file.", file=sys.stderr, flush=True)


SQLITE_CREATE_TRIES = 5  # two processes making one new SQLite file: the loser tries again (rdb_storage)


def check_sqlite(path: Path) -> None:
    """Refuse a SQLite file that cannot be written or is damaged, before SQLAlchemy opens it.

    Read-only: SQLite opened it read-only, left -wal/-shm files as read-only as it (which kept the
    study broken after the user fixed the file's mode), and its first write failed as Optuna's
    "invalid data in the commit". SQLite writes the file and makes FILE-wal, -shm or -journal
    beside it, so the folder must be writable too. Damaged (bytes overwritten inside it):
    `PRAGMA quick_check` (milliseconds for a study's file) finds a bad page anywhere, where
    Optuna would fail only when a query first reads it, with a traceback."""
    for f in (path, *(Path(f"{path}{end}") for end in ("-wal", "-shm", "-journal"))):
        if f.exists() and not os.access(f, os.W_OK):
            raise StorageError(f"{f} is read-only: SQLite must write to it to open the study; make it writable "
                               f"(chmod u+w), or copy {path} to a folder you can write.")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        what = f"{path} is read-only" if path.exists() else f"cannot create {path}"
        raise StorageError(f"{what}: its folder {path.parent} is not writable, and SQLite makes its -wal and -shm "
                           f"files there; make the folder writable, or use a file in one you can write.")
    if not (path.is_file() and path.stat().st_size):
        return  # a new file: SQLAlchemy makes it
    try:
        with closing(sqlite3.connect(path)) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.OperationalError:  # locked, cannot open: SQLAlchemy waits for it or says so
        return
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        problems = [str(e)]
    if problems != ["ok"]:
        raise StorageError(f"{path} is damaged ({problems[0]}): restore it from a backup, or salvage what is "
                           f"left with `sqlite3 {path} .recover | sqlite3 NEW.db`.")


def rdb_storage(rdb_url: str, **kwargs) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage. Two processes creating one new SQLite file at once both see no tables
    and both create them: the loser fails with "table ... already exists", or, one step later, both
    write the schema's version row and the loser fails with "UNIQUE constraint failed:
    alembic_version...". It tries again, and then finds the tables and the row made."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(1, SQLITE_CREATE_TRIES + 1):
        try:
            return optuna.storages.RDBStorage(rdb_url, **kwargs)
        except (OperationalError, IntegrityError) as e:
            lost_race = "already exists" in str(e) or "alembic_version" in str(e)
            if not lost_race or attempt == SQLITE_CREATE_TRIES:
                raise
            time.sleep(0.1 * attempt)


def make_storage(url: str, heartbeat: int | None = 30) -> optuna.storages.BaseStorage:
    """sqlite:///file, postgresql://..., mysql://... (with heartbeats) or journal:FILE."""
    path = check_storage_url(url)
    if path is not None and studies_root() in path.parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:"):
        try:
            return optuna.storages.JournalStorage(journal_backend(path))
        except OSError as e:  # a read-only folder, a path that is a folder
            raise StorageError(f"cannot open storage {url!r}: {e.strerror or e}.") from None
    if url.startswith("sqlite:///"):
        check_sqlite(path)
        fast_sqlite()
    rdb_url = url  # SQLAlchemy's default PostgreSQL driver is psycopg2; the postgres extra ships psycopg 3
    if url.startswith("postgresql://"):
        rdb_url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental" since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not heartbeat:
                return rdb_storage(rdb_url)
            # a trial whose worker stopped beating is failed after the grace period and retried
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
            return rdb_storage(rdb_url, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
                               heartbeat_stale_trial_callback=retry)
    except ModuleNotFoundError as e:
        raise StorageError(f"cannot open storage {redact(url)!r}: no driver {e.name!r}; pip install 'budgetnas[postgres]' "
                         "for PostgreSQL.") from None
    except Exception as e:  # noqa: BLE001 -- sqlalchemy/driver errors: bad URL, unreachable server
        raise StorageError(f"cannot open storage {redact(url)!r}: {redact(str(e).splitlines()[0])}") from None


def worker_id() -> str:
    """This process, as a trial's "worker" attribute names it (workers.fail_orphans judges by it)."""
    return f"{socket.gethostname()}:{os.getpid()}"
