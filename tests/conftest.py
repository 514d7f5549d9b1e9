"""Fixtures: a tiny synthetic IDX dataset that a small CNN can learn in seconds."""

from __future__ import annotations

import gzip
import logging
import os
import re
import subprocess
import sys
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from budgetnas.search.study.config import StudyConfig
from budgetnas.space import Arch, Conv, Pool, Recipe, SpaceConfig, sample_arch, scale_to_budget
from budgetnas.space.errors import ShapeError


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0800|ndim, big-endian dims, raw bytes."""
    header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


PATTERNS = np.random.default_rng(42).random((16, 6, 6)) > 0.5  # one fixed 6x6 glyph per class


def synthetic_split(n: int, seed: int, size: tuple[int, int] = (28, 28), channels: int = 0,
                    classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Each image is its class's glyph (scaled x2) at a random place, on noise: any conv net with a
    GAP or flatten head can learn it in a few hundred steps, chance is 1/classes. Images are
    (n, H, W), or (n, H, W, C) with `channels` (the glyph's colour then random)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.uint8)
    h, w = size
    images = rng.integers(0, 60, (n, h, w, max(1, channels))).astype(np.uint8)
    glyphs = PATTERNS.repeat(2, 1).repeat(2, 2)
    for i, y in enumerate(labels):
        r, c = rng.integers(0, h - 12), rng.integers(0, w - 12)
        images[i, r : r + 12, c : c + 12][glyphs[y]] = rng.integers(160, 256, max(1, channels)) if channels else 255
    return (images if channels else images[..., 0]), labels


def write_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 1200, n_test: int = 300) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_split(n, seed)
        (raw / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (raw / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return raw


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    write_idx_dataset(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Tests run in a temp dir (studies/ lands there) and never see the real data root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUDGETNAS_DATA", raising=False)
    torch.set_num_threads(1)  # each test, as a command run in-process sets one a core; xdist runs a worker a core


def write_npz(path: Path, size=(32, 32), channels=3, classes=12, n_train=1200, n_test=300) -> Path:
    """Keras' load_data() layout: x_train (N, H, W[, C]) uint8, y_train (N,) ints, and the test pair."""
    (x, y), (xt, yt) = (synthetic_split(n, seed, size, channels, classes) for n, seed in ((n_train, 0), (n_test, 1)))
    np.savez(path, x_train=x, y_train=y.astype(np.int64), x_test=xt, y_test=yt.astype(np.int64))
    return path


def write_image_folder(root: Path, size=(32, 32), channels=3, classes=12, n_train=1200, n_test=300) -> Path:
    """torchvision's ImageFolder layout: train/<class>/<i>.png and test/<class>/<i>.png."""
    from PIL import Image

    for which, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = synthetic_split(n, seed, size, channels, classes)
        for i, (x, y) in enumerate(zip(images, labels, strict=True)):
            folder = root / which / f"class{y:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(folder / f"{i:05d}.png")
    return root


def write_idx_folder(folder: Path, size=(32, 32), channels=3, classes=12, n_train=1200, n_test=300) -> Path:
    """The four IDX files in one folder (images idx3, or idx4 with channels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_split(n, seed, size, channels, classes)
        (folder / f"{name}-images-idx3-ubyte").write_bytes(idx_bytes(images))  # MNIST's name, even for 4 dims
        (folder / f"{name}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return folder


# ----------------------------------------------------------------------------- shared by the tests
TINY = Arch(blocks=(Conv(8), Pool(), Conv(12), Pool(), Conv(12)), head="gap", bn=True,
            recipe=Recipe(optimizer="adam", lr=0.01, schedule="onecycle", epochs=3, batch_size=64, rotate=5))

# a GAP head only: no flatten head on a 2-stage 28x28 model fits the tests' 3,000-parameter budget
SMALL = SpaceConfig(stages=(2, 2), convs=(1, 2), channels=(8, 12), optimizer=("adam",), lr=(0.01, 0.02),
                    schedule=("none", "cosine"), batch_size=(64,), rotate=(0.0, 5.0), bn=(True,), head=("gap",))


def cfg(data_root, **kw) -> StudyConfig:
    base = {"name": "t", "budget": 3000, "trials": 3, "epochs": 2, "data_dir": str(data_root), "val_size": 200,
                "warm_start": False, "space": SMALL, "storage": "sqlite:///t.db"}
    return StudyConfig(**{**base, **kw})


WIDE = SpaceConfig(separable=(True, False), ema=(0.0, 0.998))


def random_archs(n: int, seed: int = 0, space: SpaceConfig = WIDE):
    """Archs sampled from the space (by default all knobs, both heads, BN on/off, separable or not)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    while len(out) < n:
        trial = study.ask()
        try:
            out.append(sample_arch(trial, space))
        except ShapeError:  # image shrinks to nothing: the objective prunes these
            pass
        study.tell(trial, 0.0)
    return out


def filled_sample(trial: optuna.trial.FrozenTrial, space: SpaceConfig, epochs: int, budget: int) -> Arch | None:
    """What a filling study trains for `trial`: its sampled model, with the input and head of the
    model it stored (the data's), scaled to the budget; None where none fits."""
    stored = Arch.from_dict(trial.user_attrs["arch"])
    sampled = sample_arch(optuna.trial.FixedTrial(trial.params), space, epochs)
    return scale_to_budget(replace(sampled, image_size=stored.image_size, in_channels=stored.in_channels,
                                   classes=stored.classes), budget)


def budgetnas(*args, cwd):
    """`budgetnas ARGS` as a process of its own: for what only a real process shows (all it prints,
    signals, a real run). Each pays about 2 s of imports; a check of bad input uses `cli`."""
    env = {**os.environ, "BUDGETNAS_DATA": str(cwd / "nowhere")}
    return subprocess.run([sys.executable, "-m", "budgetnas.search.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120, check=False)


@pytest.fixture
def cli(monkeypatch, capfd):
    """`budgetnas ARGS` run in this process, answering as the command would in a terminal: its exit
    code and all it shows there. pytest keeps warnings and earlier-made log handlers off the captured
    streams, so here warnings are shown as Python's default filters would, and log handlers write to
    the captured stderr, for the run."""
    from budgetnas.search.cli import main

    def run(*args, cwd) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("BUDGETNAS_DATA", str(cwd / "nowhere"))
        capfd.readouterr()
        handlers = [h for lg in [logging.root, *logging.root.manager.loggerDict.values()]
                    for h in getattr(lg, "handlers", []) if type(h) is logging.StreamHandler]
        streams = [h.setStream(sys.stderr) for h in handlers]
        try:
            with warnings.catch_warnings(record=True) as shown:
                warnings.resetwarnings()  # Python's defaults: these hidden, the rest shown once a place
                for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                    warnings.simplefilter("ignore", hidden)
                try:
                    main(list(args))
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else int(e.code is not None)
        finally:
            for h, stream in zip(handlers, streams):
                h.setStream(stream)
        out, err = capfd.readouterr()
        err = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown) + err
        return subprocess.CompletedProcess(["budgetnas", *args], code, out, err)

    return run


def run_drill(cfg, log=lambda line: None):
    """(the drill, its outcome), run to its end. A loaded machine times its trainings slower than
    a test's tiny hours allow, and the drill then names the hours it needs: run again with those."""
    from budgetnas.search.drill.run import Drill
    from budgetnas.search.study.config import StudyError

    for _ in range(3):
        try:
            drill = Drill(cfg, log=log)
            return drill, drill.run()
        except StudyError as e:
            need = re.search(r"too short .* use --hours ([\d.]+)", str(e))
            if need is None:
                raise
            cfg = replace(cfg, hours=float(need.group(1)))
    raise AssertionError(f"the drill still named more hours than {cfg.hours} on its third try")


def assert_one_line_error(result, match):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("budgetnas: error:"), result.stderr
    assert "Traceback" not in result.stderr and match in lines[0]


def scripted_training(make_model, recipe, data, seed=0, on_epoch=None, **kw) -> list[dict]:
    """A stand-in for `train` where training is not what a test is about (reports, export, status,
    confirm's bookkeeping, the dashboard): a deterministic learning curve from the model's size and
    the seed, in a millisecond."""
    n = sum(p.numel() for p in make_model().parameters())
    history = []
    for e in range(1, recipe.epochs + 1):
        acc = 99.0 - 5.0 / e - (n % 89) / 100 + (seed % 5) / 50
        record = {"epoch": e, "train_loss": 1.0 / e, "train_acc": acc, "val_acc": acc, "lr": recipe.lr, "seconds": 1e-3}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


@pytest.fixture
def scripted_search(monkeypatch):
    """`search` runs its trials on `scripted_training`: studies with stored trials, no training."""
    from budgetnas.search.study import objective
    from budgetnas.search.study import workers as runner

    monkeypatch.setattr(runner, "make_objective", partial(objective.make_objective, train_fn=scripted_training))


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk once filled (root only, as on CI and these machines)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=False,
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def curve_trial(study, schedule: str, curve: list[float]) -> bool:
    """A trial on `schedule` that reports `curve` epoch by epoch, its history kept as the objective
    keeps it (a replay reads it); True if the study's pruner stopped it."""
    study.enqueue_trial({"schedule": schedule})
    t = study.ask({"schedule": optuna.distributions.CategoricalDistribution(["none", "step", "onecycle", "cosine"])})
    for epoch, acc in enumerate(curve, 1):
        t.set_user_attr("history", [{"epoch": e, "val_acc": a} for e, a in enumerate(curve[:epoch], 1)])
        t.report(acc, epoch)
        if t.should_prune():
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            return True
    study.tell(t, curve[-1])
    return False
