"""The lab notebook of a study: Target / Results / Analysis for the baselines, the search and
the verified model, with two figures. Every number is read from stored trials or results."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna

from ..engine import data as D
from ..engine.data import split_words
from ..engine.results import baseline_markdown
from ..study.config import fingerprint_of
from ..study.confirm import confirmed
from ..study.select import best_trial, completed, pareto_front, val_acc
from .status import prune_counts, seconds_spent


def save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, legend: str = "lower right") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def warm_origin(t) -> str:
    """The baseline or warm_from file a trial was enqueued from; '' for a sampled one."""
    return t.user_attrs.get("baseline") or Path(t.user_attrs.get("warm_from", "")).stem


def plot_front(study: optuna.Study, path: Path) -> None:
    done = completed(study)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([t.user_attrs["params"] for t in done], [val_acc(t) for t in done], s=14, c="0.6", label="trials")
    front = pareto_front(done)
    ax.step([t.user_attrs["params"] for t in front], [val_acc(t) for t in front], where="post", c="C0",
            marker="o", label="Pareto front")
    for t in done:
        if origin := warm_origin(t):
            ax.scatter(t.user_attrs["params"], val_acc(t), marker="*", s=160, c="C3", zorder=3)
            ax.annotate(origin, (t.user_attrs["params"], val_acc(t)), xytext=(5, -10),
                        textcoords="offset points", color="C3")
    budget = fingerprint_of(study).get("budget")
    if budget:
        ax.axvline(budget, ls="--", c="0.3", lw=1, label=f"budget {budget:,}")
    accs = sorted(val_acc(t) for t in done)
    ax.set_ylim(accs[len(accs) // 4] - 0.3 if len(accs) > 4 else None, accs[-1] + 0.1 if accs else None)
    save(fig, ax, path, "trainable parameters", "validation accuracy, mean of last 3 epochs (%)",
         f"{study.study_name}: validation accuracy vs parameters ({len(done)} completed trials)")


def accuracy_window(accs: list[float], margin: float = 0.3) -> tuple[float, float]:
    """A y range that shows `accs` (the last epochs, a target) whatever the dataset's accuracy level."""
    spread = max(accs) - min(accs)
    return max(0.0, min(accs) - margin - spread), min(100.0, max(accs) + margin)


def plot_verify(verify: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in verify["runs"]:
        h = run["history"]
        ax.plot([r["epoch"] for r in h], [r["test_acc"] for r in h], marker=".", label=f"seed {run['seed']}")
    target = verify["verdict"]["target"]
    if target is not None:
        ax.axhline(target, ls="--", c="0.3", lw=1, label=f"target {target}%")
    ax.set_ylim(*accuracy_window([a for run in verify["runs"] for a in run["last3_test"]] + [target] * (target is not None)))
    save(fig, ax, path, "epoch", "test accuracy (%)",
         f"{Path(verify['target']).name}: test accuracy per epoch ({len(verify['runs'])} seeds)")


def search_section(study: optuna.Study) -> list[str]:
    fp = fingerprint_of(study)
    cfg = study.user_attrs.get("config", {})
    trials = study.get_trials(deepcopy=False)
    done = completed(study)
    counts = prune_counts(study)
    hours = seconds_spent(study) / 3600
    trained = [t for t in trials if t.user_attrs.get("history") and "seconds" in t.user_attrs]
    first_done = min(done, key=lambda t: t.number, default=None)
    lines = [
        f"## Search: {study.study_name}",
        "",
        f"**Target.** The most accurate model under {fp.get('budget', 0):,} parameters, selected on "
        f"validation accuracy (mean of the last 3 of {fp.get('epochs')} epochs, {fp.get('val_size')} images held "
        f"out from the training files, {split_words(fp.get('val_split'))}; the test split is not used). Objective: {fp.get('objective')}; pruner: "
        f"{cfg.get('pruner')}; training images per trial: {fp.get('subset') or 'all'}; sampler: TPE with the "
        "parameter budget as a constraint"
        + ("; every sampled model's widths scaled by the largest one factor within the budget" if fp.get("fill") else "")
        + ". Space: "
        + ", ".join(f"{k} {v}" for k, v in fp.get("space", {}).items()) + ".",
        "",
        "**Results.**",
        "",
        "| trials | completed | pruned over budget | pruned early | diverged | training time | trials/hour |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        (f"| {len(trials)} | {len(done)} | {counts['over budget']} | {counts['early (pruner)']} | {counts['diverged']} "
        f"| {hours * 60:.0f} min | {len(trials) / hours if hours else 0:.0f} |"),
        "",
    ]
    if first_done is not None:
        before = sum(t.user_attrs.get("seconds", 0) for t in trials if t.number <= first_done.number)
        lines += [(f"First fully trained trial: number {first_done.number}, after {before / 60:.1f} min of training. "
                  f"Trials that trained at all: {len(trained)}; mean {statistics.mean(t.user_attrs['seconds'] for t in trained):.0f} s each."), ""]
    if not done:
        return lines + ["No completed trial yet.", ""]
    lines += ["Pareto front (validation accuracy vs parameters):", "", "| trial | params | val acc | warm start |",
              "|---:|---:|---:|---|"]
    lines += [f"| {t.number} | {t.user_attrs['params']:,} | {val_acc(t):.2f}% | {warm_origin(t)} |"
              for t in pareto_front(done)]
    b = best_trial(study)
    exp4 = [t for t in done if t.user_attrs.get("baseline") == "exp4"]
    analysis = f"The best trial, {b.number}, has {b.user_attrs['params']:,} parameters and {val_acc(b):.2f}% validation accuracy."
    if exp4 and b.number == exp4[0].number:
        others = [t for t in done if "baseline" not in t.user_attrs]
        analysis += (f" That is the warm-started exp4 itself: none of the {len(others)} sampled models that completed "
                     "beat it at this fidelity.")
        if others:
            c = max(others, key=val_acc)
            analysis += (f" The best sampled one, trial {c.number}, has {c.user_attrs['params']:,} parameters "
                         f"({1 - c.user_attrs['params'] / b.user_attrs['params']:.0%} fewer) and {val_acc(c):.2f}% "
                         f"({val_acc(c) - val_acc(b):+.2f} points).")
    elif exp4:
        e = exp4[0]
        saved = 1 - b.user_attrs["params"] / e.user_attrs["params"]
        analysis += (f" The hand-written exp4, trained here under the same fidelity, has {e.user_attrs['params']:,} "
                     f"parameters and {val_acc(e):.2f}%: the search's best is {val_acc(b) - val_acc(e):+.2f} points "
                     f"with {saved:.0%} fewer parameters.")
    for t in (t for t in done if "warm_from" in t.user_attrs):
        analysis += (f" Trial {t.number}, warm-started from {t.user_attrs['warm_from']}, has "
                     f"{t.user_attrs['params']:,} parameters and {val_acc(t):.2f}%.")
    lines += ["", "![validation accuracy vs parameters](front.png)", "", "**Analysis.** " + analysis, ""]
    return lines + confirm_lines(study, b)


def confirm_lines(study: optuna.Study, best: optuna.trial.FrozenTrial) -> list[str]:
    """The top trials retrained with new seeds (`budgetnas confirm`), if they were; else nothing."""
    rows = confirmed(study)
    if not rows:
        return []
    title = ("**Confirmation** (`budgetnas confirm`: the top trials retrained with new seeds, on validation only; "
             "best mean first):")
    lines = [title, "", "| trial | params | val (trial) | val (new seeds) | mean |", "|---:|---:|---:|---|---:|"]
    lines += [f"| {t.number} | {t.user_attrs['params']:,} | {scores[0]:.2f}% | "
              f"{' '.join(f'{x:.2f}%' for x in scores[1:])} | {statistics.mean(scores):.2f}% |" for t, scores in rows]
    c, scores = rows[0]
    same = "the same trial as the best by its own score" if c.number == best.number else f"not trial {best.number}"
    choice = (f"The confirmed choice (`budgetnas export --confirmed`) is trial {c.number}, "
              f"{c.user_attrs['params']:,} parameters, mean {statistics.mean(scores):.2f}% over {len(scores)} seeds: {same}.")
    return lines + ["", choice, ""]


def verify_section(verify: dict, exp4_runs: list[dict], figure: str) -> list[str]:
    v = verify["verdict"]
    runs = verify["runs"]
    params = runs[0]["params"]
    lines = [
        f"## Verification: {verify['target']}",
        "",
        ("**Target.** Retrained from scratch on all training images, test accuracy "
        + (f">= {v['target']:.2f}% in each of the last 3 epochs" if v["target"] is not None else
           "after every epoch, no bar set (no verdict)")
        + f", for each of {len(runs)} seeds (`{verify.get('command', 'budgetnas verify')}`)."),
        "",
        "**Results.**",
        "",
        "| seed | params | epochs | best test | last-3 test | min last-3 | s/epoch |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    lines += [f"| {r['seed']} | {r['params']:,} | {r['epochs']} | {r['best_test']:.2f}% | "
              f"{', '.join(f'{a:.2f}' for a in r['last3_test'])} | {r['min_last3']:.2f}% | {r['sec_per_epoch']:.1f} |"
              for r in runs]
    lines += ["", (f"Verdict: **{ {True: 'PASS', False: 'FAIL', None: 'none (no bar)'}[v['passed']] }**, "
                   f"min last-3 {v['min_last3']:.2f}%, "
              f"mean last-3 {v['mean_last3']:.2f}%."), "", f"![test accuracy per epoch]({figure})", ""]
    analysis = f"{params:,} parameters, min last-3 test accuracy {v['min_last3']:.2f}% over {len(runs)} seeds."
    same = {r["seed"]: r["summary"]["last3_test"] for r in exp4_runs} == {r["seed"]: r["last3_test"] for r in runs}
    if exp4_runs and same:
        analysis += (" This is exp4 exported through the study: the standalone module, retrained by `verify`, "
                     "reproduces the baseline runs' last-3 test accuracies exactly, seed for seed.")
    elif exp4_runs:
        e = exp4_runs[0]["summary"]["params"]
        emin = min(r["summary"]["min_last3"] for r in exp4_runs)
        analysis += (f" The handwritten exp4 has {e:,} parameters and min last-3 {emin:.2f}% over "
                     f"{len(exp4_runs)} seeds: the searched model uses {1 - params / e:.0%} fewer parameters "
                     f"({e - params:,} saved) at {v['min_last3'] - emin:+.2f} points of min last-3 accuracy.")
    return lines + ["**Analysis.** " + analysis, ""]


def write_report(study: optuna.Study, out: Path, verify_jsons: Sequence[Path] = ()) -> Path:
    """`verify_jsons`: one Verification section (and figure, named after the JSON) each."""
    from ..engine.results import baseline_runs

    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {study.study_name}: lab notebook", "",
             ("Generated by `budgetnas report`; every number is read from the study's stored trials, the "
             "baselines' result files and the verification results."), ""]
    label = D.label(study.user_attrs.get("config", {}).get("dataset", "mnist"))
    if baseline_runs(label):  # the handwritten baselines, where they were run on this data
        lines += baseline_markdown(label).split("\n")[1:]  # its own title replaced by ours
    if completed(study):
        plot_front(study, out.parent / "front.png")
    lines += search_section(study)
    exp4_runs = baseline_runs(label).get("exp4", [])
    for path in verify_jsons:
        verify = json.loads(path.read_text())
        figure = path.with_suffix(".png").name
        plot_verify(verify, out.parent / figure)
        lines += verify_section(verify, exp4_runs, figure)
    if not verify_jsons:
        lines += ["## Verification", "", "Not verified yet: run `budgetnas verify ... --json` first.", ""]
    out.write_text("\n".join(lines).replace("\n\n\n", "\n\n"))
    return out
