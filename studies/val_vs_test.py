"""Validation accuracy at selection against test accuracy at verification, for every
verified exported module under studies/ (read from its `verify*.json` and the header that
`budgetnas export` wrote into the module, kept as NAME.provenance.json beside its Arch JSON). It asks: among the best trials of a study, does
the validation score still rank models by test accuracy?

    python studies/val_vs_test.py
"""

import json
import math
import re
import statistics
from pathlib import Path

STUDIES = Path(__file__).parent

records = {path: json.loads(path.read_text()) for path in sorted(STUDIES.glob("*/verify*.json"))}
drills = {path.parent.name for path, result in records.items() if result.get("command", "").startswith("budgetnas drill ")}
rows = []
for path, result in records.items():
    if path.parent.name in drills:  # a drill's pick, verified again or not: chosen by a race over seeds
        continue
    module = Path(result["target"])
    provenance = module.with_suffix(".provenance.json")  # the module's header lines, kept beside its Arch JSON
    header = ("\n".join(f"{k}: {v}" for k, v in json.loads(provenance.read_text()).items()) if provenance.is_file()
              else module.read_text()[:2000])
    val = re.search(r"Validation accuracy: ([\d.]+)% \(mean of the last 3 of (\d+) epochs, (\d+) held-out", header)
    trial = re.search(r"Study: (\S+), trial (\d+)", header)
    tests = [x for run in result["runs"] for x in run["last3_test"]]
    rows.append({"module": str(module), "trial": f"{trial[1]} #{trial[2]}", "params": result["runs"][0]["params"],
                 "val": float(val[1]), "val_epochs": int(val[2]), "val_images": int(val[3]), "test_mean": statistics.mean(tests),
                 "test_min": min(tests), "tail": "the last ones of the training file" in header, "verdict": "PASS" if result["verdict"]["passed"] else "FAIL"})

print(f"{'module':<36} {'trial':<20} {'params':>6} {'val':>7} {'test mean':>9} {'test min':>8}  verdict")
for r in sorted(rows, key=lambda r: -r["val"]):
    print(f"{r['module']:<36} {r['trial']:<20} {r['params']:>6} {r['val']:>6.2f}% {r['test_mean']:>8.2f}% "
          f"{r['test_min']:>7.2f}%  {r['verdict']}" + ("  (tail split)" if r["tail"] else "") + ("" if r["val_epochs"] == 15 else f"  (val at {r['val_epochs']} epochs)"))

top = [r for r in rows if r["val_epochs"] == 15 and r["val"] >= 99.25 and not r["tail"]]  # random splits only
r_val_test = statistics.correlation([r["val"] for r in top], [r["test_mean"] for r in top])
print(f"{len(top)} modules selected at >= 99.25% validation (15 epochs, random splits): "
      f"val {min(r['val'] for r in top):.2f}-{max(r['val'] for r in top):.2f}%, "
      f"test mean {min(r['test_mean'] for r in top):.2f}-{max(r['test_mean'] for r in top):.2f}%, "
      f"Pearson correlation of val and test mean {r_val_test:+.2f}")
best = max(top, key=lambda r: r["val"])
p, n = best["val"] / 100, best["val_images"]
print(f"standard error of one validation score at {best['val']:.2f}% on {n} images: "
      f"{100 * math.sqrt(p * (1 - p) / n):.2f} point (binomial)")
