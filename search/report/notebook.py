"""The drill's lab notebook: one Target / Results / Analysis section per stage, with figures.

Every number is read from the drill's storage (its studies and the drill study's user
attributes) and from studies/NAME/verify.json; `budgetnas report --study NAME` rewrites it.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna

from ...space import Arch
from ...space.derive import to_toml
from ..drill import racing as R
from ..drill import state
from ..drill.race import val_accs
from ..drill.run import stage_study
from ..drill.warm import FILLED, PRIOR
from ..engine.verify import distribution_line
from ..study.notes import describe
from ..study.select import best_trial, completed, val_acc
from .status import prune_counts, seconds_spent
from .study import plot_front, save


def trained(study: optuna.Study | None) -> list:
    return [] if study is None else [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("history")]


def pruning_words(study: optuna.Study) -> str:
    pruner = study.user_attrs.get("config", {}).get("pruner")
    return {"median": "the median rule", "median-by-schedule": "the median rule among trials of their own LR schedule",
            "reach-bar": "the median rule among trials of their own LR schedule, and when the project's verified runs "
                         "said they could no longer reach the bar"}.get(pruner, f"the {pruner} pruner")


def bar_words(counts: dict[str, int]) -> str:
    bar = counts.get("of them, could not reach the bar")
    return f" ({bar} could not reach the bar)" if bar else ""


def by_schedule(study: optuna.Study) -> str:
    """Trained trials by LR schedule: how many ran to the end (a pruner's bias shows here)."""
    ran_to_end: dict[str, list[bool]] = {}
    for t in trained(study):
        schedule = Arch.from_dict(t.user_attrs["arch"]).recipe.schedule
        ran_to_end.setdefault(schedule, []).append(t.state == optuna.trial.TrialState.COMPLETE)
    return "Trained, by LR schedule: " + "; ".join(
        f"{name} {len(ends)} ({sum(ends)} completed)" for name, ends in sorted(ran_to_end.items())) + "."


def study_results(study: optuna.Study) -> list[str]:
    counts = prune_counts(study)
    done = completed(study)
    rows = sorted(done, key=lambda t: (-val_acc(t), t.user_attrs["params"]))[:5]
    lines = ["| trials | trained | completed | over budget (not trained) | stopped early | diverged | training time |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             (f"| {len(study.trials)} | {len(trained(study))} | {len(done)} | {counts['over budget']} | "
              f"{counts['early (pruner)']}{bar_words(counts)} | {counts['diverged']} | {seconds_spent(study) / 60:.1f} min |"),
             "",
             by_schedule(study), "",
             "The best five by validation (mean of the last 3 epochs; the race ranks Narrow's by the worst of them):", "",
             "| trial | params | val | worst of last 3 | model |", "|---:|---:|---:|---:|---|"]
    lines += [f"| {t.number} | {t.user_attrs['params']:,} | {val_acc(t):.2f}% | "
              f"{R.seed_score(val_accs(t)):.2f}% | "
              f"{describe(Arch.from_dict(t.user_attrs['arch']))} |" for t in rows]
    return lines + [""]


def plot_race(race: state.Race, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(race.runners):
        ax.scatter([i] * len(r.scores), r.scores, s=40, label=f"trial {r.number} ({r.params:,} params)"
                   + (f", dropped after {race.dropped[str(r.number)]} seeds" if str(r.number) in race.dropped else ""))
        ax.plot([i - 0.2, i + 0.2], [R.statistic(r.scores)] * 2, c="0.2", lw=2)
    ax.set_xticks(range(len(race.runners)), [f"trial {r.number}" for r in race.runners])
    ax.set_xlim(-0.5, len(race.runners) - 0.5)
    save(fig, ax, path, "candidate", f"validation, worst of last {R.LAST} epochs (%)",
         "race: one dot a seed; bar: mean - std", legend="best")


def plot_verify_curves(verify: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    last = []
    for run in verify["runs"]:
        h = run["history"]
        ax.plot([r["epoch"] for r in h], [r["test_acc"] for r in h], marker=".", label=f"seed {run['seed']}")
        last += [r["test_acc"] for r in h[len(h) // 2:]]
    target = verify["verdict"].get("target")
    if target is not None:
        ax.axhline(target, ls="--", c="0.3", lw=1, label=f"bar {target}%")
        last.append(target)
    ax.set_ylim(min(last) - 0.3, min(100, max(last) + 0.2))  # the second half of training, where the verdict is
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    save(fig, ax, path, "epoch", "test accuracy (%)", f"verify: test accuracy per epoch ({len(verify['runs'])} seeds)")


def minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def write_drill_report(drill: optuna.Study, folder: Path) -> Path:
    a = drill.user_attrs
    cfg, plan, derived = a["config"], state.read(drill, "plan"), state.read(drill, "space")
    explore, narrow = stage_study(drill, "explore"), stage_study(drill, "narrow")
    race, choice, done = state.read(drill, "race"), state.read(drill, "choice"), a.get("done", [])
    bar = cfg.get("bar")
    race_trainings = sum(len(r.scores) - 1 for r in race.runners) if race else 0
    verify_path = folder / "verify.json"
    verify = json.loads(verify_path.read_text()) if "verify" in done and verify_path.exists() else None
    lines = [f"# {drill.study_name}: the drill's lab notebook", "",
             ("Generated by `budgetnas drill` (again by `budgetnas report --study NAME`) from the drill's storage; "
              "every number is read from its stored trials and runs."), "",
             (f"Budget {cfg['budget']:,} parameters on {cfg['dataset']}; {cfg['hours']:g} h on "
              f"{cfg.get('workers') or 'one per core'} worker(s), {a.get('spent', 0) / 60:.0f} min spent; "
              f"bar {bar if bar is not None else 'none (maximise accuracy)'}; verify seeds {cfg['seeds']}; full fidelity "
              f"{cfg['epochs']} epochs; {cfg['val_size']:,} validation images held out from the training file."), "",
             "| stage | trainings | done | planned to end at, min | ended at, min |", "|---|---:|---|---:|---:|"]
    trainings = {"explore": len(trained(explore)), "narrow": len(trained(narrow)), "race": race_trainings,
                 "verify": len(verify["runs"]) if verify else 0}
    planned = ({"explore": plan.explore_end, "narrow": plan.narrow_end, "race": plan.race_end} if plan else {}) | {
        "verify": cfg["hours"] * 3600}  # the last re-plan's ends; Verify's is the hours
    ended = a.get("ended", {})  # not recorded by drills before 2026-12-07
    lines += [f"| {s} | {n} | {'yes' if s in done else 'no'} | {minutes(planned.get(s))} | {minutes(ended.get(s))} |"
              for s, n in trainings.items()] + [""]
    if explore is not None and completed(explore):
        plot_front(explore, folder / "explore-front.png")
        lines += ["## 1. Explore", "",
                  (f"**Target.** Find where the broad default space trains well under the budget, at a low fidelity "
                   f"chosen from the time budget: {plan.explore_epochs} epochs on "
                   f"{plan.explore_images:,} training images a trial (about "
                   f"{plan.explore_training_s / 60:.1f} min each, against "
                   f"{plan.full_training_s / 60:.1f} min at full fidelity). Over-budget models are pruned "
                   f"before training, hopeless ones by {pruning_words(explore)}; the baselines that fit, and those that do "
                   "not shrunk to the budget, are tried first."), "", "**Results.**", ""]
        lines += study_results(explore) + [warm_starts_line(explore), "", "![explore](explore-front.png)", ""]
        if derived:
            lines += [(f"**Analysis.** The {len(derived.from_trials)} best trials "
                       f"({', '.join(map(str, derived.from_trials))}) decide the next space: "
                       + agreement(derived.space) + "."), ""]
    if narrow is not None and derived:
        lines += ["## 2. Narrow", "",
                  (f"**Target.** The best models in the derived space at full fidelity ({cfg['epochs']} epochs on all "
                   f"training images but the validation split), warm-started from Explore's best three{warm_words(derived.warm)}."
                   + (" Every sampled model has its widths scaled by the largest one factor that keeps it within the "
                      "budget, so models of other depths compete at the same budget."
                      if narrow.user_attrs.get("config", {}).get("fill") else "")
                   + " The space, as `narrow-space.toml`:"), "", "```toml", to_toml(derived.space).rstrip(), "```", "",
                  "**Results.**", ""]
        if completed(narrow):
            plot_front(narrow, folder / "narrow-front.png")
            lines += study_results(narrow) + ["![narrow](narrow-front.png)", ""]
            warm = [t for t in completed(narrow) if "warm_from" in t.user_attrs]
            best = best_trial(narrow)
            analysis = f"Best at full fidelity: trial {best.number}, {best.user_attrs['params']:,} params, {val_acc(best):.2f}%"
            if warm:
                analysis += ("; Explore's best, retrained at full fidelity: "
                             + ", ".join(f"{Path(t.user_attrs['warm_from']).stem} {val_acc(t):.2f}%" for t in warm))
            lines += ["**Analysis.** " + analysis + ".", ""]
    if race:
        tie = 100.0 / cfg["val_size"]
        plot_race(race, folder / "race.png")
        lines += ["## 3. Race", "",
                  (f"**Target.** One training is a draw. Narrow's top {len(race.runners)} by their own run's worst of "
                   f"the last {R.LAST} validation epochs get extra seeds on validation, round by round ({R.MIN_SEEDS} seeds each, up to {R.MAX_SEEDS} "
                   f"while the leader's standard error is as large as its lead over the runner-up or its distance from the bar); a candidate is dropped when its statistic falls {R.Z:g} standard errors of a "
                   "difference behind the leader's. A seed's score is the worst of its last "
                   f"{R.LAST} validation epochs; the statistic is their mean minus their standard deviation; "
                   f"within {tie:.2f} point (one validation image) the smaller model wins."), "",
                  "**Results.**", "", "| trial | params | scores per seed | mean | 95% interval | statistic | |",
                  "|---:|---:|---|---:|---|---:|---|"]
        for r in race.runners:
            note = (f"dropped after {race.dropped[str(r.number)]} seeds" if str(r.number) in race.dropped
                    else ("**picked**" if choice and choice.trial == r.number else ""))
            low, high = R.interval(r.scores)
            spread = f"{low:.2f}-{high:.2f}%" if len(r.scores) > 1 else "one seed"
            lines.append(f"| {r.number} | {r.params:,} | {' '.join(f'{s:.2f}' for s in r.scores)} | "
                         f"{statistics.mean(r.scores):.2f}% | {spread} | {R.statistic(r.scores):.2f}% | {note} |")
        lines += ["", "![race](race.png)", ""]
        if choice:
            why = {"separated": "one candidate was left", "seeds": "every survivor had its seeds",
                   "decided": "the leader's lead over the runner-up was larger than its standard error",
                   "time": "the race's share of the time was spent"}.get(race.ended, race.ended)
            lines += [(f"**Analysis.** The race ended because {why}. The pick, recorded on the drill before the test "
                       f"split was read: trial {choice.trial}, {choice.params:,} params, statistic "
                       f"{choice.statistic:.2f}% over {len(choice.scores)} seeds: "
                       f"{describe(Arch.from_dict(choice.arch))}. " + pick_origin(narrow, explore, choice.trial)), ""]
    if verify:
        v, runs = verify["verdict"], verify["runs"]
        engine = verify.get("engine", {})
        device_flag = f" --device {engine['device']}" if engine.get("device", "auto") != "auto" else ""
        plot_verify_curves(verify, folder / "verify.png")
        lines += ["## 4. Verify", "",
                  (f"**Target.** The pick, exported as `best.py`, retrained from scratch by its recipe on all training "
                   f"images, tested after every epoch, seeds 0-{len(runs) - 1}: "
                   + (f"PASS if every one of the last 3 epochs of every seed reaches {bar}%."
                      if bar is not None else "no bar given, so no verdict.")
                   + f" The same runs as `budgetnas verify {verify['target']} --seeds {len(runs)}{device_flag}` "
                   f"(torch {verify.get('torch')}, device {engine.get('device')}, {engine.get('precision')})."), "",
                  "**Results.**", "", "| seed | params | best test | last-3 test | min last-3 | s/epoch |",
                  "|---:|---:|---:|---|---:|---:|"]
        lines += [f"| {r['seed']} | {r['params']:,} | {r['best_test']:.2f}% | "
                  f"{', '.join(f'{x:.2f}' for x in r['last3_test'])} | {r['min_last3']:.2f}% | {r['sec_per_epoch']:.1f} |"
                  for r in runs]
        word = {True: "PASS", False: "FAIL", None: "no verdict"}[v["passed"]]
        spread = distribution_line(v)  # pass count, interval, worst seed (verify records of older drills lack them)
        lines += ["", f"Verdict: **{word}**, min last-3 {v['min_last3']:.2f}%, mean last-3 {v['mean_last3']:.2f}%"
                  + (f"; {spread}." if spread else "."), "",
                  "![verify](verify.png)", ""]
        if choice:
            gap = v["mean_last3"] - statistics.mean(choice.scores)
            lines += [(f"**Analysis.** On validation the pick's seeds scored {statistics.mean(choice.scores):.2f}% "
                       f"(worst of the last 3, mean over seeds); on test its last-3 mean is {v['mean_last3']:.2f}% "
                       f"({gap:+.2f} points)."
                       + (f" Its worst epoch is {v['min_last3'] - bar:+.2f} points from the bar." if bar is not None else "")),
                      ""]
    out = folder / "REPORT.md"
    out.write_text("\n".join(lines))
    return out


UNTRAINED = {"budget": "over the budget, not trained", "shape": "the image cannot hold it", "pruner": "stopped early",
             "bar": "stopped early, could not reach the bar", "diverged": "diverged"}


def warm_origin(t: optuna.trial.FrozenTrial) -> str | None:
    """Where an Explore warm start came from (None: the trial was sampled)."""
    if "baseline" in t.user_attrs:
        return f"{t.user_attrs['baseline']} (baseline)"
    if "warm_from" not in t.user_attrs:
        return None
    stem = Path(t.user_attrs["warm_from"]).stem.removeprefix("warm-")
    if stem.endswith(PRIOR):
        return f"{stem.removesuffix(PRIOR)}'s verified pick, scaled to the budget"
    return stem


def warm_starts_line(explore: optuna.Study) -> str:
    """Explore's warm starts, where each came from, and how each scored."""
    warm = [(t, origin) for t in explore.get_trials(deepcopy=False) if (origin := warm_origin(t))]
    return ("Warm starts, tried first: " + "; ".join(
        f"{origin}: " + (f"{val_acc(t):.2f}%" if t.state == optuna.trial.TrialState.COMPLETE
                            else UNTRAINED.get(t.user_attrs.get("pruned_by"), t.state.name.lower())) for t, origin in warm) + "."
            if warm else "No warm starts.")


def pick_origin(narrow: optuna.Study, explore: optuna.Study | None, trial: int) -> str:
    """Whether the pick is a warm start as given or a model the search sampled; a filled Explore
    trial is traced to what Explore tried it as (a sampled model, a baseline, a verified prior)."""
    t = narrow.trials[trial]
    if "warm_from" not in t.user_attrs:
        return "The pick was sampled by the search in Narrow, not a warm start."
    stem = Path(t.user_attrs["warm_from"]).stem
    source = re.fullmatch(rf"explore-trial(\d+)({FILLED})?", stem)
    if source and explore is not None:
        first = explore.trials[int(source.group(1))]
        origin = warm_origin(first)
        stem += (f": Explore's trial {first.number}, " + (f"itself a warm start, {origin}" if origin else "sampled by Explore's search")
                 + (", filled to the budget" if source.group(2) else ""))
    return f"The pick is a warm start used as given ({stem})."


def warm_words(warm: list[str]) -> str:
    """How Narrow's warm starts relate to Explore's best three: plain, filled or both."""
    stems = [Path(w).stem for w in warm]
    wide = f"filled to the budget with the weight average on (`{FILLED}`)"
    if not any(s.endswith(FILLED) for s in stems):
        return ""
    return f", each also {wide}" if not all(s.endswith(FILLED) for s in stems) else f" {wide}"


def agreement(space: dict) -> str:
    """The knobs a derived space fixes and the ones it leaves open, in words: the knobs the drill
    recorded, so a knob added since (at its default) leaves an older notebook's text as it was."""
    fixed, open_ = [], []
    for k, v in space.items():
        if not isinstance(v, list):
            continue
        (fixed if len(set(map(str, v))) == 1 else open_).append(f"{k} {v[0] if len(set(map(str, v))) == 1 else v}")
    return f"fixed {', '.join(fixed) or 'nothing'}; open {', '.join(open_) or 'nothing'}"
