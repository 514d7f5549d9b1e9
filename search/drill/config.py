"""A drill's settings: what it shares with a study (study/config.py `RunConfig`) and its own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..engine.results import studies_root
from ..study.config import ADDED_SINCE, MAX_SECONDS, RunConfig, StudyConfig, StudyError, whole

# the median among trials of the same LR schedule (study/config.py), and what the project's verified runs say
# can no longer reach the bar (study/curves.py), on validation raised by the largest validation-to-test gap
PRUNER = "reach-bar"


@dataclass(frozen=True, kw_only=True)
class DrillConfig(RunConfig):
    hours: float = 1.0  # wall-clock budget of the whole drill, verify included
    seeds: int = 3  # verify seeds, 0..N-1
    workers: int | None = None  # processes on this machine; default one per core

    def __post_init__(self):
        if isinstance(self.name, str) and "/" in self.name:
            raise StudyError(f"a drill's name names one folder under studies/ (no '/'), but got {self.name!r}.")
        super().__post_init__()
        if not (isinstance(self.hours, (int, float)) and 0 < self.hours <= MAX_SECONDS / 3600):
            raise StudyError(f"hours must be a number in (0, {MAX_SECONDS / 3600:.0f}], but got {self.hours}.")
        whole(self, seeds=1, workers=1)

    @property
    def folder(self) -> Path:
        return studies_root() / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"journal:{self.folder / 'drill.journal'}"

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def seconds(self) -> float:
        return self.hours * 3600

    def fingerprint(self) -> dict:
        """What must not change when a drill is resumed (time, workers and paths may)."""
        keep = ("budget", "dataset", "bar", "seeds", "epochs", "subset", "val_size", "val_split", "seed")
        return {k: getattr(self, k) for k in keep}

    def changed_since(self, old: dict) -> str:
        """The settings that differ from a stored fingerprint, in words ('' if none)."""
        old = {**{k: v for k, v in ADDED_SINCE.items() if k in self.fingerprint()}, **old}
        return "; ".join(f"{k}: was {old.get(k)!r}, now {v!r}" for k, v in self.fingerprint().items() if old.get(k) != v)

    def stage(self, stage: str, **kw) -> StudyConfig:
        """The study of one stage (NAME/stage) in the drill's storage, with the drill's data and budget."""
        shared = {k: getattr(self, k) for k in ("budget", "dataset", "data_dir", "val_size", "val_split", "seed", "bar")}
        return StudyConfig(name=f"{self.name}/{stage}", storage=self.storage_url, trials=1_000_000, pruner=PRUNER,
                           **{**shared, "subset": self.subset, "epochs": self.epochs, **kw})

