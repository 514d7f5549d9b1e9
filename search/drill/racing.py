"""The Race: the top candidates on extra seeds, on validation only, and the pick.

One training is a draw: the validation score of a small CNN moves by about 0.1 point from
seed to seed, as much as the gaps between the best candidates. So the candidates race, as in
irace (López-Ibáñez et al., 2016: candidates run on a stream of instances, and a statistical
test drops those that are worse) and SMAC's intensification (a challenger runs on the
incumbent's seeds and is dropped as soon as it is worse on them). Here an instance is a
training seed. Every surviving candidate gets the same seeds, one round at a time; after a
round a candidate is dropped when its statistic is below the leader's by more than `Z`
standard errors of a difference (a t-test's rule, the spread pooled over all candidates).
The race reads its own error: after `MIN_SEEDS` seeds each, it goes on only while the leader's
standard error is as large as its lead over the runner-up or its distance from the bar
(`undecided`), up to `MAX_SEEDS`. It
ends when one candidate is left, when the lead is larger than its error ('decided'), when
`MAX_SEEDS` are run, or when its time is spent.

The statistic rewards consistency, not the luckiest draw. The score of one seed is the worst
of its last `LAST` validation epochs (the course's bar holds in every one of them); a
candidate's statistic is the mean of its seeds' scores minus their standard deviation.
Candidates within `tie` of each other are tied, and a tie goes to fewer parameters.
These functions only compute: the drill trains and stores.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from ..engine.verify import LAST  # a seed's score is the worst of its last LAST validation epochs

Z = 2.0  # standard errors of a difference that separate two candidates
CANDIDATES = (3, 8)  # how many enter the race: at least 3, and one per worker up to 8 (see candidates)
MIN_SEEDS = 3  # seeds per candidate before the race may be decided, its first (search) run included
MAX_SEEDS = 6  # seeds per candidate at most, while the leader's error is as large as its lead


@dataclass
class Runner:
    number: int  # the trial that proposed it
    params: int  # trainable parameters
    scores: list[float] = field(default_factory=list)  # one per seed, in seed order

    def to_dict(self) -> dict:
        return {"number": self.number, "params": self.params, "scores": self.scores}


def candidates(workers: int) -> int:
    """How many of Narrow's best enter the race. A round trains every alive candidate's next seed
    side by side, so with fewer candidates than workers the rest stand idle (mnist-drill-7k-4 ran
    3 on 2 workers; a GPU holds 6-12); entrants beyond 8 are ones Narrow already ranks far down."""
    low, high = CANDIDATES
    return max(low, min(high, workers))


def rounds(workers: int) -> int:
    """Trainings a worker takes in a race before it may be decided: every entrant's extra seeds up
    to MIN_SEEDS, a round at a time, each round in waves of one training per worker (more, while
    undecided, come from the race's time share)."""
    return (MIN_SEEDS - 1) * math.ceil(candidates(workers) / workers)


def round_seconds(seconds: list[float], workers: int) -> float:
    """How long a round of trainings of `seconds` each takes on `workers` side by side: the
    slowest, once a wave (three runners on two workers are two waves: the third trains alone)."""
    return max(seconds) * math.ceil(len(seconds) / workers)


def seed_score(val_accs: list[float]) -> float:
    """One seed's score: its worst validation accuracy of the last LAST epochs."""
    if not val_accs:
        raise ValueError("a seed's score needs its per-epoch validation accuracies, but got none.")
    return min(val_accs[-LAST:])


def statistic(scores: list[float]) -> float:
    """Mean over seeds minus their standard deviation (none with one seed)."""
    return statistics.mean(scores) - (statistics.stdev(scores) if len(scores) > 1 else 0.0)


def pick(runners: list[Runner], tie: float) -> Runner:
    """The best by `statistic` on the seeds all have; of those within `tie` of it, the smallest."""
    n = min(len(r.scores) for r in runners)
    best = max(statistic(r.scores[:n]) for r in runners)
    return min((r for r in runners if best - statistic(r.scores[:n]) <= tie),
               key=lambda r: (r.params, -statistic(r.scores[:n]), r.number))


def survivors(runners: list[Runner], tie: float) -> list[Runner]:
    """Those not separated from the leader, compared on the seeds all of them have."""
    n = min(len(r.scores) for r in runners)
    if n < 2 or len(runners) < 2:
        return list(runners)
    spread = math.sqrt(statistics.mean(statistics.variance(r.scores[:n]) for r in runners))
    margin = Z * max(spread, tie) * math.sqrt(2 / n)
    lead = max(statistic(r.scores[:n]) for r in runners)
    return [r for r in runners if lead - statistic(r.scores[:n]) <= margin]


def standard_error(scores: list[float]) -> float:
    """The standard error of the mean of `scores` (infinite with one: nothing is known yet)."""
    return statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else math.inf


def interval(scores: list[float]) -> tuple[float, float]:
    """A 95% interval of the mean score (normal approximation; what the notebook shows)."""
    half = 1.96 * standard_error(scores)
    return statistics.mean(scores) - half, statistics.mean(scores) + half


def undecided(alive: list[Runner], bar: float | None = None) -> bool:
    """Whether the leader's standard error is as large as its lead over the runner-up, or as its
    distance from `bar` (validation read as test, as the pruner does), on the seeds all alive
    candidates have: another seed could change the pick, or whether it clears the bar."""
    n = min(len(r.scores) for r in alive)
    ranked = sorted((statistic(r.scores[:n]) for r in alive), reverse=True)
    leader = max(alive, key=lambda r: statistic(r.scores[:n]))
    gaps = [ranked[0] - ranked[1]] + ([abs(ranked[0] - bar)] if bar is not None else [])
    return len(ranked) > 1 and standard_error(leader.scores[:n]) >= min(gaps)


def finished(alive: list[Runner], bar: float | None = None, max_seeds: int = MAX_SEEDS,
             min_seeds: int = MIN_SEEDS) -> str | None:
    """Why the race is over ('separated', 'seeds', 'decided'), or None to run another round."""
    if len(alive) <= 1:
        return "separated"
    n = min(len(r.scores) for r in alive)
    if n >= max_seeds:
        return "seeds"
    if n >= min_seeds and not undecided(alive, bar):
        return "decided"
    return None
