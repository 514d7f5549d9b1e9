"""The curves `reach-bar` judges by (search/study/curves.py), and what the rule would have done to
the runs they come from: per epoch, the fit of the worst last-3 test accuracy on the accuracy at
that epoch, the accuracy below which a run is called hopeless, and how many past runs (and how
many that passed the bar) the rule stops there. Each run is judged by a fit without itself.

    python studies/bar_curves.py [DATASET [SCHEDULE [EPOCHS [BAR]]]]   # default: mnist onecycle 15 99.4
"""

import sys

from budgetnas.search.study import curves as C

dataset, schedule, epochs, bar = (sys.argv[1:] + ["mnist", "onecycle", "15", "99.4"][len(sys.argv) - 1:])[:4]
epochs, bar = int(epochs), float(bar)
runs = C.past_curves(dataset, schedule, epochs)
fits = C.fits(runs)
without = [C.fits(runs[:i] + runs[i + 1:]) for i in range(len(runs))]  # leave-one-out
stop = {}  # run -> the first epoch at which the rule stops it
for i, (curve, _) in enumerate(runs):
    stop[i] = next((e for e, fit in without[i].items() if fit.hopeless(curve[e - 1], bar)), None)
print(f"{len(runs)} verified runs of {dataset}, {schedule}, {epochs} epochs; {sum(f >= bar for _, f in runs)} reach {bar}; "
      f"Z {C.Z}, judged where r >= {C.MIN_R}")
print(f"{'epoch':>5} {'r':>5} {'slope':>6} {'sd':>6} {'hopeless below':>15} {'stopped here':>13} {'of them passing':>16}")
for epoch, fit in fits.items():
    here = [i for i, e in stop.items() if e == epoch]
    line = (bar - C.Z * fit.sd - fit.intercept) / fit.slope if fit.r >= C.MIN_R and fit.slope > 0 else float("nan")
    print(f"{epoch:>5} {fit.r:>5.2f} {fit.slope:>6.2f} {fit.sd:>6.3f} {line:>14.2f}% {len(here):>13} "
          f"{sum(runs[i][1] >= bar for i in here):>16}")
stopped = [i for i, e in stop.items() if e is not None]
saved = sum(epochs - stop[i] for i in stopped)
print(f"stopped: {len(stopped)} of {len(runs)} runs, {sum(runs[i][1] >= bar for i in stopped)} of them passing; "
      f"{saved} of {len(runs) * epochs} epochs saved ({saved / max(1, len(runs) * epochs):.0%})")
