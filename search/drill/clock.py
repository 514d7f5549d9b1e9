"""The drill's clock: seconds it has run over all its invocations, kept on its study."""

from __future__ import annotations

import threading
import time

import optuna


class Clock:
    """Stored every `every` s and at each stage's end, so a killed drill loses at most that much of
    its account."""

    def __init__(self, study: optuna.Study, every: float = 15.0):
        self.study, self.base, self.t0 = study, study.user_attrs.get("spent", 0.0), time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(every,), daemon=True)
        self._thread.start()

    def now(self) -> float:
        return self.base + time.monotonic() - self.t0

    def save(self) -> float:
        """Store the time spent; return it (what was stored, not a second reading)."""
        now = self.now()
        self.study.set_user_attr("spent", now)
        return now

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            self.save()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.save()
