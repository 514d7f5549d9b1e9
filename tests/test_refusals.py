"""Refuse before writing: every refused invocation of every command exits 2 with one line and leaves
the working folder (the studies root in it) byte-identical.

Two sweeps. One reads the parser: every option of every command that validates its value (a typed
or a choice option) is given out-of-domain values. The other lists the refusals that need the data,
a file or a study to see (a validation split larger than the data, one-class data, a missing file,
a study name that leaves studies/...)."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from budgetnas.search.cli import parser
from tests.conftest import assert_one_line_error, cfg, write_npz

DATA = "DATA"  # replaced by the test's synthetic IDX data root
FZ = "journal:studies/fz.journal"  # a journal, not SQLite: a process that opened SQLite may checkpoint its WAL later

# Each command called with valid settings, so that a refusal is the tried flag's (a flag already
# here gets the tried value instead).
BASES = {
    "search": ["--study", "new", "--trials", "1", "--epochs", "1", "--val-size", "50", "--no-warm-start",
               "--budget", "3000", "--data-dir", DATA],
    "drill": ["--name", "new", "--budget", "3000", "--hours", "0.05", "--epochs", "1", "--val-size", "50",
              "--seeds", "1", "--data-dir", DATA],
    "verify": ["exp4", "--seeds", "1", "--epochs", "1", "--data-dir", DATA],
    "baseline": ["exp4", "--epochs", "1", "--data-dir", DATA],
    "bench": ["--arch", "exp4", "--images", "64", "--repeats", "1", "--data-dir", DATA],
    "status": ["--study", "fz", "--storage", FZ],
    "export": ["--study", "fz", "--storage", FZ, "-o", "out.py"],
    "render": ["a.json", "-o", "out.py"],
    "confirm": ["--study", "fz", "--storage", FZ, "--top", "1", "--seeds", "1"],
    "report": ["--study", "fz", "--storage", FZ],
    "pruners": ["--study", "fz", "--storage", FZ],
    "dashboard": ["--study", "fz", "--storage", FZ],
    "join": ["--name", "fz", "--storage", FZ, "--data-dir", DATA],
    "parity": ["ref.json", "other.json"],  # no option that checks a value: tests/test_parity.py tries its files
}
BAD_VALUES = ["nan", "inf", "-1", "x", "1e400", "99999999999999999999"]  # the last: beyond every domain


def validated_options() -> list[tuple[str, str, str]]:
    """(command, flag, bad value) for every option that checks its value: a type or choices."""
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(BASES), "a new command needs its base invocation here"
    out = []
    for name, sub in commands.items():
        for a in sub._actions:
            if a.option_strings and a.nargs != 0 and (a.type not in (None, str) or a.choices):
                out += [(name, a.option_strings[-1], v) for v in BAD_VALUES
                        if not (a.choices and v in a.choices)]
    return out


def invocation(command: str, flag: str, value: str) -> list[str]:
    base = list(BASES[command])
    if flag in base:
        base[base.index(flag) + 1] = value
        return [command, *base]
    return [command, *base, flag, value]


# Refusals that need the data, a file or a study to see; ONE_CLASS, RGB: data files made below.
SEEN_IN_CONTEXT = [
    (["join", "--name", "nothere"], "no study database"),
    (["parity", "missing.json", "other.json", "--json", "p.json"], "not a verify result"),
    (["join", *BASES["join"]], "is not a drill"),
    (["join", "--name", "a/b"], "names one folder"),
    (["search", *BASES["search"], "--val-size", "5000"], "holds out every training image"),
    (["search", *BASES["search"], "--subset", "100000"], "more than the"),
    (["search", *BASES["search"], "--dataset", "ONE_CLASS"], "a classifier needs two"),
    (["search", *BASES["search"], "--dataset", "missing.npz"], "no such file or folder"),
    (["search", *BASES["search"], "--budget", "50"], "smallest model"),
    (["search", *BASES["search"], "--timeout", "-5"], "timeout must be"),
    (["search", *BASES["search"], "--warm-from", "missing.json", "--no-warm-start"], "missing.json"),
    (["search", *BASES["search"], "--objective", "speed"], "objective must be"),
    (["search", *BASES["search"], "--pruner", "x"], "pruner must be"),
    (["search", *BASES["search"], "--val-split", "x"], "val_split must be"),
    (["search", *BASES["search"], "--storage", "redis://x"], "storage must be"),
    (["search", *BASES["search"], "--device", "tpu"], "device must be"),
    (["search", "--study", "../../x"], "a study name must be"),
    (["search", "--config", "missing.toml"], "no such config file"),
    (["drill", *BASES["drill"], "--val-size", "5000"], "holds out every training image"),
    (["drill", *BASES["drill"], "--dataset", "ONE_CLASS"], "a classifier needs two"),
    (["drill", *BASES["drill"], "--dataset", "missing.npz"], "no such file or folder"),
    (["drill", *BASES["drill"], "--hours", "1e9"], "hours must be"),
    (["drill", *BASES["drill"], "--bar", "101"], "bar is a test accuracy"),
    (["verify", *BASES["verify"], "--bar", "0"], "a test accuracy in percent, in (0, 100]"),  # one domain, as the settings'
    (["pruners", *BASES["pruners"], "--bar", "0"], "a test accuracy in percent, in (0, 100]"),
    (["drill", *BASES["drill"], "--device", "tpu"], "device must be"),
    (["drill", *BASES["drill"], "--name", "a/b"], "no '/'"),
    (["verify", "missing.py"], "no such file"),
    (["verify", "bad.json"], "bad.json"),
    (["verify", "exp4", "--json", "nofolder/v.json"], "does not exist"),
    (["verify", "exp4", "--dataset", "ONE_CLASS"], "a classifier needs two"),
    (["verify", "exp4", "--device", "tpu"], "device must be"),
    (["verify", "a.json", "--dataset", "RGB"], "takes images"),
    (["baseline", "exp9"], "unknown baseline"),
    (["baseline", "exp4", "--dataset", "missing.npz"], "no such file or folder"),
    (["bench", *BASES["bench"], "--json", "nofolder/b.json"], "does not exist"),
    (["bench", *BASES["bench"], "--dataset", "missing.npz"], "no such file or folder"),
    (["bench", *BASES["bench"], "--arch", "missing.json"], "missing.json"),
    (["bench", *BASES["bench"], "--device", "tpu"], "device must be"),
    (["bench", *BASES["bench"], "--images", "100000"], "more than the"),
    (["export", "--study", "fz", "--storage", FZ, "-o", "nofolder/m.py"], "does not exist"),
    (["export", "--study", "fz", "--storage", FZ, "--trial", "999"], "999"),
    (["render", "missing.json"], "missing.json"),
    (["render", "bad.json"], "bad.json"),
    (["render", "a.json", "-o", "nofolder/m.py"], "does not exist"),
    (["report", "--study", "fz", "--storage", FZ, "--verify", "bad.json"], "not a verify result"),
    *[([command, "--study", study, *extra], match)
      for command, extra in [("status", []), ("export", []), ("confirm", []), ("report", []), ("pruners", []),
                             ("dashboard", [])]
      for study, match in [("../../x", "a study name must be"), ("nothing", "no study")]],
    *[([command, "--study", "nothing", "--storage", FZ], "nothing") for command in ("status", "export", "report")],
    (["dashboard", "--study", "fz", "--storage", "redis://x"], "storage must be"),
    (["dashboard", "--study", "fz", "--storage", FZ, "--host", "no such host"], "no such host"),
]


@pytest.fixture
def folder(tmp_path, data_root, scripted_search):
    """A working folder with a small study (fz), an Arch JSON, a broken JSON and two data files."""
    from budgetnas.search.study.workers import run

    run(cfg(data_root, name="fz", trials=2, epochs=1, storage=FZ))
    from budgetnas.search.cli import main

    main(["export", "--study", "fz", "--storage", FZ, "-o", "a.json"])
    (tmp_path / "bad.json").write_text("{not json")
    path = write_npz(tmp_path / "one.npz", size=(16, 16), channels=0, classes=3, n_train=200, n_test=50)
    arrays = dict(np.load(path))
    arrays["y_train"][:] = 1  # every training label the same
    np.savez(path, **arrays)
    write_npz(tmp_path / "rgb.npz", size=(16, 16), classes=3, n_train=200, n_test=50)
    return tmp_path


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(args: list[str], match: str, root: Path, data_root: Path, cli) -> None:
    args = [{DATA: str(data_root), "ONE_CLASS": str(root / "one.npz"), "RGB": str(root / "rgb.npz")}.get(a, a)
            for a in args]
    before = snapshot(root)
    assert_one_line_error(cli(*args, cwd=root), match)
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, 0) != after.get(k, 0))
    assert not changed, f"budgetnas {' '.join(args)} was refused but wrote {changed}"


def test_every_validated_option_refuses_out_of_domain_values_without_writing(folder, data_root, cli):
    cases = validated_options()
    assert {c for c, _, _ in cases} >= set(BASES) - {"render", "report", "pruners", "status", "parity"}
    for command, flag, value in cases:
        refused(invocation(command, flag, value), "error", folder, data_root, cli)


@pytest.mark.parametrize("args, match", SEEN_IN_CONTEXT, ids=[" ".join(a[:1] + a[-2:]) for a, _ in SEEN_IN_CONTEXT])
def test_refusals_seen_in_context_write_nothing(args, match, folder, data_root, cli):
    refused(args, match, folder, data_root, cli)
