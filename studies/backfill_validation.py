"""Give the verify records of drills made before Drill II's reach-bar fix their pick's validation
statistic (`curves.VALIDATION_KEY`, which the drill now writes itself), read from the line their
notebook wrote from the drill's journal ("On validation the pick's seeds scored X%"), and print
each drill's gap between test and validation. Run from the repository root; rerunning changes nothing.

    python studies/backfill_validation.py
"""

import json
import re
import statistics
from pathlib import Path

from budgetnas.search.engine.results import write_json
from budgetnas.search.study.curves import VALIDATION_KEY, past_offsets

LINE = re.compile(r"On validation the pick's seeds scored (\d+\.\d+)%")


def main() -> None:
    for report in sorted(Path("studies").glob("*/REPORT.md")):
        found, path = LINE.search(report.read_text()), report.parent / "verify.json"
        if not found or not path.exists():
            continue
        record = json.loads(path.read_text())
        record.setdefault(VALIDATION_KEY, float(found[1]))
        write_json(path, record)
        tests = [r["min_last3"] for r in record["runs"]]
        print(f"{report.parent.name:<22} validation {record[VALIDATION_KEY]:.2f}%  "
              f"test {statistics.mean(tests):.2f}%  gap {statistics.mean(tests) - record[VALIDATION_KEY]:+.2f}")
    gaps = past_offsets("mnist")
    print(f"mnist: {len(gaps)} gaps, {min(gaps):+.2f} to {max(gaps):+.2f}; reach-bar raises validation by the largest")


if __name__ == "__main__":
    main()
