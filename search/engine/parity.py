"""`budgetnas parity`: does an engine setting keep a model's accuracy? Two or more verify records
(`budgetnas verify ... --json`) of one model on the same seeds, the first trained the reference
way (fp32, eager), paired seed by seed.

The rule: an engine has parity with the reference when the per-seed differences of the mean
last-3 test accuracy average within MEAN_POINTS and the seeds passing the bar differ by at most
PASSES. A seed is a draw (exp4 clears 99.40% on 1 of 6 seeds in fp32 on today's engine), so the
rule reads the paired mean and the pass count, not one seed's trajectory.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ...space.errors import BadInput

MEAN_POINTS = 0.05
PASSES = 1


def read_record(path: str) -> dict:
    """A verify record with what parity reads: per-seed last-3 test accuracies and the bar."""
    try:
        record = json.loads(Path(path).read_text())
        for r in record["runs"]:
            if len(r["last3_test"]) != 3 or not all(isinstance(a, (int, float)) for a in r["last3_test"]):
                raise ValueError(f"seed {r['seed']} without three last test accuracies")
        record["verdict"]["target"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{path}: not a verify result written by `budgetnas verify --json` ({e}).") from None
    return record


def compare(reference: dict, other: dict) -> dict:
    """The paired comparison of `other` with `reference` on the seeds both trained."""
    ref, new = ({r["seed"]: r for r in rec["runs"]} for rec in (reference, other))
    seeds = sorted(set(ref) & set(new))
    if not seeds:
        raise BadInput("the two verify results share no seed: verify both with the same --seeds.")
    if any(ref[s]["params"] != new[s]["params"] for s in seeds):
        raise BadInput("the verify results are of different models (parameter counts differ).")
    bar = reference["verdict"]["target"]
    if bar is None or other["verdict"]["target"] != bar:
        raise BadInput(f"parity needs one bar for both results, but they have {bar} and {other['verdict']['target']}.")

    def mean3(run):
        return statistics.mean(run["last3_test"])

    diffs = [mean3(new[s]) - mean3(ref[s]) for s in seeds]
    passes = [sum(min(runs[s]["last3_test"]) >= bar for s in seeds) for runs in (ref, new)]
    mean_diff = statistics.mean(diffs)
    return {"seeds": seeds, "bar": bar, "engine": other.get("engine"), "reference_engine": reference.get("engine"),
            "per_seed": [{"seed": s, "reference": ref[s]["last3_test"], "other": new[s]["last3_test"], "diff": d}
                         for s, d in zip(seeds, diffs, strict=True)],
            "mean_diff": mean_diff, "passes": passes,
            "parity": abs(mean_diff) <= MEAN_POINTS and abs(passes[1] - passes[0]) <= PASSES}


def table(label: str, cmp: dict) -> str:
    """One comparison as Markdown: a row per seed, then the verdict line."""
    lines = [f"| {label}: seed | reference last 3 | this engine last 3 | difference of the means |", "|---:|---|---|---:|"]
    for row in cmp["per_seed"]:
        ref, new = (" ".join(f"{a:.2f}" for a in row[k]) for k in ("reference", "other"))
        lines.append(f"| {row['seed']} | {ref} | {new} | {row['diff']:+.3f} |")
    (p_ref, p_new), n = cmp["passes"], len(cmp["seeds"])
    lines.append(f"\nmean difference {cmp['mean_diff']:+.3f} point (parity: within {MEAN_POINTS}); seeds passing "
                 f"{cmp['bar']}%: {p_new}/{n} against {p_ref}/{n} (parity: within {PASSES}); "
                 f"{'PARITY' if cmp['parity'] else 'NO PARITY'}")
    return "\n".join(lines)
