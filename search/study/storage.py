"""Optuna storages by URL: sqlite:///FILE (the default of `search`), journal:FILE (the drill's;
several processes on one machine), postgresql:// or mysql:// (many machines, with heartbeats);
their checks, SQLite's pragmas and a journal that survives `kill -9`."""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import warnings
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
    lock, to FILE.torn, or the next append would follow it and make the whole file unreadable."""
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
        finally:
            lock.release()
    return JournalFileBackend(str(path), lock_obj=lock)


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
        fast_sqlite()
    rdb_url = url  # SQLAlchemy's default PostgreSQL driver is psycopg2; the postgres extra ships psycopg 3
    if url.startswith("postgresql://"):
        rdb_url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental" since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not heartbeat:
                return optuna.storages.RDBStorage(rdb_url)
            # a trial whose worker stopped beating is failed after the grace period and retried
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
            return optuna.storages.RDBStorage(rdb_url, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
                                              heartbeat_stale_trial_callback=retry)
    except ModuleNotFoundError as e:
        raise StorageError(f"cannot open storage {redact(url)!r}: no driver {e.name!r}; pip install 'budgetnas[postgres]' "
                         "for PostgreSQL.") from None
    except Exception as e:  # noqa: BLE001 -- sqlalchemy/driver errors: bad URL, unreachable server
        raise StorageError(f"cannot open storage {redact(url)!r}: {redact(str(e).splitlines()[0])}") from None
