"""The drill's state: one typed record per stage result, stored on the drill's own study (its
user attributes) as soon as it exists, and read back here, in one place."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import optuna

from .racing import Runner

KEY = "drill"  # the drill study's user attribute holding its fingerprint


@dataclass
class Plan:
    """Each stage's end on the drill's clock (seconds) and Explore's fidelity (drill/plan.py)."""

    explore_end: float
    narrow_end: float
    race_end: float
    explore_epochs: int  # Explore's fidelity: epochs a trial ...
    explore_images: int  # ... on this many training images
    full_training_s: float  # one full-fidelity training, one worker, as first timed
    verify_s: float  # Verify's reserve
    explore_training_s: float  # one Explore training
    sec_per_image: float  # training seconds per image-epoch, the search engine
    sec_per_image_verify: float  # the same, the verify engine (fp32, eager)
    short: bool  # the hours do not cover Race and Verify at full fidelity
    verify_planned_s: float | None = None  # the first plan's Verify reserve, before re-plans scaled it
    measured: dict[str, float] = field(default_factory=dict)  # stage -> a full training as measured when it started

    def window(self, stage: str) -> tuple[float, float, float]:
        """(start, end, one training's seconds) of a trial stage on the drill's clock, as its workers plan it."""
        if stage == "explore":
            return 0.0, self.explore_end, self.explore_training_s
        return self.explore_end, self.narrow_end, self.measured.get("narrow", self.full_training_s)


@dataclass
class Derived:
    """Narrow's space, derived from Explore's best (space/derive.py)."""

    space: dict  # SpaceConfig.to_dict()
    from_trials: list[int]  # the Explore trials it was derived from
    warm: list[str]  # Arch JSON files Narrow starts from


@dataclass
class Race:
    runners: list[Runner]
    dropped: dict[str, int] = field(default_factory=dict)  # trial number -> seeds it had when dropped
    seconds: list[float] = field(default_factory=list)  # each extra training's wall time
    ended: str | None = None  # separated | seeds | time

    def alive(self) -> list[Runner]:
        return [r for r in self.runners if str(r.number) not in self.dropped]


@dataclass
class Choice:
    """The pick, recorded before the test split is read."""

    trial: int
    params: int
    scores: list[float]  # per seed, on validation
    statistic: float  # drill/racing.py `statistic` of the scores
    ended: str  # why the race ended
    arch: dict  # the Arch, at full fidelity


@dataclass
class Verified:
    verdict: dict  # engine/verify.py `verdict`
    params: int


RECORDS = {"plan": Plan, "space": Derived, "race": Race, "choice": Choice, "verify": Verified}
OLD_KEYS = {"from": "from_trials"}  # drills stored before these records had names of their own


def read(study: optuna.Study, key: str):
    """The record stored under `key`, or None before it exists."""
    d = study.user_attrs.get(key)
    if d is None:
        return None
    cls = RECORDS[key]
    d = {OLD_KEYS.get(k, k): v for k, v in d.items()}
    if cls is Race:
        d["runners"] = [Runner(**r) for r in d["runners"]]
    return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def write(study: optuna.Study, key: str, record) -> None:
    assert isinstance(record, RECORDS[key]), (key, type(record))
    study.set_user_attr(key, json.loads(json.dumps(asdict(record))))  # user_attrs reads the storage: no reload
