"""One drill at a time per name: two at once would train the same seeds into the same files and
both charge the drill's clock. The lock is a file in the drill's folder holding its owner's pid
and host, created atomically (O_CREAT | O_EXCL) and removed when the drill ends, however it ends.
One left by a drill killed on this machine (`kill -9`, a crash) names a pid that is gone: it is
broken. One from another machine (a shared folder) cannot be judged from here: it is respected.
The file appears with its content (written aside, then hard-linked into place, which fails if
one exists), so a drill killed as it takes the lock never leaves an empty one."""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from ..study.config import StudyError
from ..study.workers import alive


@contextmanager
def drill_lock(folder: Path, log=print):
    path = folder / "drill.lock"
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    mine = path.with_name(f"drill.lock.{me['pid']}")
    mine.write_text(json.dumps(me))
    try:
        while True:
            try:
                os.link(mine, path)  # atomic, and the lock is whole the moment it exists
                break
            except FileExistsError:
                owner = _owner(path)
                if owner is None:  # removed as we looked: try again
                    continue
                if owner.get("host") != me["host"] or not isinstance(owner.get("pid"), int):
                    raise StudyError(f"drill {folder.name!r} is locked by pid {owner.get('pid', '?')} on host "
                                     f"{owner.get('host', '?')} ({path}); if no drill of this name runs there, remove "
                                     "that file.") from None
                if alive(owner["pid"]):
                    raise StudyError(f"drill {folder.name!r} is already running (pid {owner['pid']} on host "
                                     f"{owner['host']}, {path}); wait for it to end or stop it.") from None
                log(f"drill: breaking the lock of pid {owner['pid']}, which is gone ({path})")
                path.unlink(missing_ok=True)
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _owner(path: Path) -> dict | None:
    """The lock's owner: None where the file is gone, {} where it cannot be read."""
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {}
    return owner if isinstance(owner, dict) else {}
