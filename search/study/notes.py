"""What a person sees in optuna-dashboard: a Target / Results / Analysis note on every trial
and on the study, and per-trial artifacts (the standalone module and its learning curve)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna_dashboard import save_note

from ...space import Arch, Conv
from ..engine.data import split_words
from ..engine.render import render


def describe(arch: Arch) -> str:
    """One line: the blocks (p = padded, t = 1x1, d = depthwise, | = max-pool), then head and recipe."""
    blocks = " ".join(
        ("|" if not isinstance(b, Conv) else f"{b.out}{'t' if b.k == 1 else ''}{'d' if b.groups > 1 else ''}{'p' if b.pad else ''}")
        for b in arch.blocks
    )
    r = arch.recipe
    sched = r.schedule + (f" every {r.step_every} x{r.step_gamma}" if r.schedule == "step" else "")
    return (f"convs `{blocks}`, {'BN' if arch.bn else 'no BN'}, dropout {arch.dropout:g}, {arch.head} head; "
            f"{r.optimizer} lr {r.lr:.3g} ({sched}), wd {r.weight_decay:g}, batch {r.batch_size}, "
            f"rotate {r.rotate:g} deg, shift {r.translate:g}, {r.epochs} epochs"
            + (f", weight average {r.ema:g}" if r.ema else "")
            + (f", label smoothing {r.label_smoothing:g}" if r.label_smoothing else ""))


def trial_note(arch: Arch, params: int, budget: int, history: list[dict], outcome: str) -> str:
    lines = ["### Target", describe(arch), "", f"{params:,} parameters of a {budget:,} budget ({params / budget:.0%}).",
             "", "### Results"]
    if history:
        val = [h["val_acc"] for h in history]
        lines += ["| epoch | train loss | train acc | val acc | s |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {h['epoch']} | {h['train_loss']:.4f} | {h['train_acc']:.2f}% | {h['val_acc']:.2f}% | "
                  f"{h['seconds']:.1f} |" for h in history]
        lines += ["", f"Best val {max(val):.2f}% (epoch {val.index(max(val)) + 1}), last {val[-1]:.2f}%."]
    else:
        lines.append("Not trained.")
    return "\n".join(lines + ["", "### Analysis", outcome])


def learning_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_acc"] for h in history], marker=".", label="train (augmented)")
    ax.plot(epochs, [h["val_acc"] for h in history], marker=".", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(max(0, min(h["val_acc"] for h in history[len(history) // 2 :]) - 1), 100)  # the second half: any dataset
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def annotate_trial(trial: optuna.Trial, arch: Arch, params: int, budget: int, history: list[dict], outcome: str,
                   artifact_dir: Path | None) -> None:
    """Note always; artifacts only for trials that trained (an over-budget trial must stay cheap)."""
    save_note(trial, trial_note(arch, params, budget, history, outcome))
    if artifact_dir is None or not history:
        return
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    with tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / f"trial_{trial.number}.py"
        module.write_text(render(arch, {"Study": f"{trial.study.study_name}, trial {trial.number}"}))
        curve = Path(tmp) / f"trial_{trial.number}_curve.png"
        learning_curve(history, curve)
        for path in (module, curve):
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def study_note(study: optuna.Study, config: dict) -> None:
    from ..engine.results import baseline_runs

    space = "\n".join(f"| {k} | {v} |" for k, v in config["space"].items())
    runs = baseline_runs(config["dataset"])
    rows = "\n".join(f"| {name} | {rs[0]['summary']['params']:,} | "
                     f"{min(r['summary']['min_last3'] for r in rs):.2f}% | {len(rs)} |" for name, rs in runs.items())
    save_note(study, f"""### Target
The most accurate CNN under **{config['budget']:,} parameters** on {config['dataset']}, objective
`{config['objective']}`, {config['epochs']} epochs a trial on {config['subset'] or 'all'} training images,
selected on {config['val_size']} held-out validation images ({split_words(config['val_split'])}; never the test split).

### Space
| knob | range / choices |
|---|---|
{space}

### Baselines (test accuracy, all training images, 15 epochs)
| baseline | params | min last-3 test acc | seeds |
|---|---:|---:|---:|
{rows or '| not run yet | | | |'}
""")
