"""Bad input: one line on stderr, exit code 2, no traceback, nothing written to the study."""


import optuna
import pytest

from tests.conftest import assert_one_line_error, budgetnas


@pytest.fixture
def cwd(tmp_path):
    (tmp_path / "bad.toml").write_text('[study]\nname = "x"\nbudgett = 1\n')
    (tmp_path / "typed.toml").write_text('[study]\nbudget = "8k"\n')
    return tmp_path


CASES = [
    (["baseline", "exp1", "--data-dir", "/nonexistent"], "/nonexistent/MNIST/raw"),
    (["baseline", "exp9"], "unknown baseline"),
    (["search", "--study", "x", "--dataset", "cifar", "--trials", "1"], "unknown dataset"),
    (["search", "--study", "x", "--budget", "0"], "budget must be a whole number in [1, "),
    (["search", "--study", "x", "--storage", "redis://localhost/0"], "storage must be"),
    (["search", "--study", "x", "--storage", "postgresql://u:p@127.0.0.1:1/db", "--data-dir", "DATA",
      "--val-size", "200"],
     "cannot open storage"),
    (["search", "--study", "x", "--workers", "0"], "--workers: must be a whole number in [1, "),
    (["search", "--config", "bad.toml"], "unknown [study] keys ['budgett']"),
    (["search", "--config", "typed.toml"], "budget must be int"),
    (["search", "--config", "missing.toml"], "no such config file"),
    (["status", "--study", "nothing"], "no study database"),
    (["status"], "which study?"),
    (["status", "--config", "missing.toml"], "no such config file"),
    (["export", "--study", "nothing"], "no study database"),
    (["verify", "missing.py"], "no such file"),
    (["search", "--study", "../../x"], "a study name must be"),
    (["search", "--study", ""], "a study name must be"),
    (["search", "--study", "x", "--subset", "0"], "subset must be"),
    (["search", "--study", "x", "--subset", "-5"], "subset must be"),
    (["search", "--study", "x", "--storage", "sqlite:///"], "names no file"),
    (["search", "--study", "x", "--storage", "journal:"], "names no file"),
    (["verify", "exp1", "--json", "nofolder/v.json"], "folder nofolder does not exist"),
    (["verify", "exp1", "--json", "."], "is a folder"),
    (["export", "--study", "nothing", "-o", "nofolder/m.py"], "folder nofolder does not exist"),
    (["drill", "--name", "../x", "--budget", "5000"], "name"),
    (["drill", "--name", "a/b", "--budget", "5000"], "no '/'"),
]

BAD_SPACE = ['head = ["gapp"]', 'optimizer = ["lbfgs"]', "lr = [0, 0.1]", "dropout = [0.0, 1.0]", "batch_size = [0]",
             "ema = [1.5]", "channels = [0, 8]", "channel_step = 0", "rotate_step = 0.0", 'schedule = ["linear"]',
             "step_gamma = [0.0]", "weight_decay = [-1e-4]", "translate = [0.0, 1.0]", "stages = [0, 2]",
             "label_smoothing = [1.0]"]


@pytest.mark.parametrize("line", BAD_SPACE)
def test_space_values_are_checked_by_meaning_before_a_study_exists(line, cwd, cli):
    (cwd / "s.toml").write_text(f'[study]\nname = "s"\n[space]\n{line}\n')
    assert_one_line_error(cli("search", "--config", "s.toml", cwd=cwd), f"[space] {line.split()[0]} must be")
    assert not (cwd / "studies").exists()


def test_a_storage_password_never_reaches_the_terminal(cwd, data_root):
    result = budgetnas("search", "--study", "x", "--storage", "postgresql://user:SECRET@127.0.0.1:1/db",
                       "--data-dir", str(data_root), "--val-size", "200", cwd=cwd)
    assert_one_line_error(result, "cannot open storage")
    assert "SECRET" not in result.stderr + result.stdout and "user:***@" in result.stderr


def test_the_resolved_config_never_holds_a_storage_password():
    from budgetnas.search.study.config import StudyConfig

    cfg = StudyConfig(name="x", storage="postgresql://user:SECRET@db.example/studies")
    assert "SECRET" not in str(cfg.to_dict()) and cfg.storage_url.endswith("SECRET@db.example/studies")


def test_test_labels_unseen_in_training_are_refused(cwd, data_root, cli):
    from tests.conftest import idx_bytes

    path = data_root / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    import gzip

    import numpy as np

    labels = np.frombuffer(gzip.decompress(path.read_bytes())[8:], dtype=np.uint8).copy()
    labels[0] = 255
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    assert_one_line_error(cli("baseline", "exp1", "--data-dir", str(data_root), cwd=cwd), "[255] never occur")


def test_a_data_file_that_cannot_be_read_is_not_called_corrupt(cwd, data_root, cli):
    path = data_root / "MNIST/raw/train-images-idx3-ubyte.gz"
    path.unlink()
    path.mkdir()
    assert_one_line_error(cli("baseline", "exp1", "--data-dir", str(data_root), cwd=cwd), "cannot read it")


def test_report_reads_every_input_before_writing_anything(cwd, cli):
    (cwd / "studies").mkdir()
    optuna.create_study(study_name="rep", storage=f"sqlite:///{cwd}/studies/rep.db")
    (cwd / "bad.json").write_text("{not json")
    assert_one_line_error(cli("report", "--study", "rep", "--verify", "bad.json", cwd=cwd), "not a verify result")
    written = sorted(p.name for p in (cwd / "studies").iterdir() if not p.name.endswith(("-wal", "-shm")))
    assert written == ["rep.db"]  # (SQLite's own WAL files aside: this process may hold the database open)


@pytest.mark.parametrize("args, match", CASES, ids=[" ".join(a[:2]) + ":" + m[:20] for a, m in CASES])
def test_bad_input_is_one_line_and_exit_2(args, match, cwd, data_root, cli):
    args = [str(data_root) if a == "DATA" else a for a in args]
    assert_one_line_error(cli(*args, cwd=cwd), match)
    assert not list(cwd.glob("studies/*.db")) or args[0] != "search"  # no study was created by a refused search


def test_truncated_data_file(cwd, data_root, cli):
    path = data_root / "MNIST/raw/train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    result = cli("baseline", "exp1", "--data-dir", str(data_root), cwd=cwd)
    assert_one_line_error(result, "train-labels-idx1-ubyte.gz")


def test_export_from_a_study_with_no_completed_trial(cwd, cli):
    (cwd / "studies").mkdir()
    optuna.create_study(study_name="empty", storage=f"sqlite:///{cwd}/studies/empty.db")
    assert_one_line_error(cli("export", "--study", "empty", cwd=cwd), "has no completed trial")


def test_resuming_with_a_changed_budget(cwd, data_root):
    common = ["search", "--study", "r", "--trials", "1", "--epochs", "1", "--subset", "200", "--val-size", "200", "--no-warm-start",
              "--data-dir", str(data_root)]
    assert budgetnas(*common, "--budget", "8000", cwd=cwd).returncode == 0
    before = (cwd / "studies/r.db").read_bytes()
    assert_one_line_error(budgetnas(*common, "--budget", "5000", cwd=cwd), "budget: was 8000, now 5000")
    assert (cwd / "studies/r.db").read_bytes() == before  # nothing written


def test_an_internal_error_is_reported_as_a_bug_not_as_bad_input(monkeypatch, capsys):
    from budgetnas.search import cli

    def broken(args):
        raise ValueError("an invariant of ours broke")  # a plain ValueError is ours, not the user's

    monkeypatch.setattr(cli, "cmd_status", broken)
    with pytest.raises(SystemExit) as e:
        cli.main(["status", "--study", "x"])
    err = capsys.readouterr().err
    assert e.value.code == cli.EXIT_BUG != cli.EXIT_USAGE
    assert "Traceback" in err and "internal error (a bug in budgetnas" in err and "budgetnas: error:" not in err


def test_bad_input_raised_anywhere_is_one_line_exit_2(monkeypatch, capsys):
    from budgetnas.search import cli
    from budgetnas.space.errors import BadInput

    monkeypatch.setattr(cli, "cmd_status", lambda args: (_ for _ in ()).throw(BadInput("bad value 7.")))
    with pytest.raises(SystemExit) as e:
        cli.main(["status", "--study", "x"])
    assert e.value.code == cli.EXIT_USAGE and capsys.readouterr().err == "budgetnas: error: bad value 7.\n"


def test_more_bad_inputs_of_the_same_classes(cwd, cli):
    (cwd / "broken.py").write_text("def Net(:\n")
    assert_one_line_error(cli("verify", "broken.py", cwd=cwd), "cannot import it (SyntaxError")
    (cwd / "imports.py").write_text("import no_such_package_here\n")
    assert_one_line_error(cli("verify", "imports.py", cwd=cwd), "cannot import it (ModuleNotFoundError")
    for name, ending in (("exits.py", "import sys\nsys.exit(0)\n"), ("os_exit.py", "import os\nos._exit(0)\n")):
        (cwd / name).write_text(ending)  # a module that ends the interpreter: never a silent success
        assert_one_line_error(cli("verify", name, cwd=cwd), f"{name}: ")
    (cwd / "folder.toml").mkdir()
    assert_one_line_error(cli("search", "--config", "folder.toml", cwd=cwd), "cannot read the config file")
    (cwd / "adir").mkdir()
    assert_one_line_error(cli("status", "--study", "x", "--storage", "journal:adir", cwd=cwd),
                          "cannot open storage")


def test_a_study_not_made_by_budgetnas_is_named_so(cwd, cli):
    (cwd / "studies").mkdir()
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{cwd}/studies/plain.db")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    for command in ("status", "export", "report"):
        assert_one_line_error(cli(command, "--study", "plain", cwd=cwd), "not made by budgetnas")


@pytest.mark.parametrize("command, cls, skip, extra", [
    ("search", "StudyConfig", {"space"}, {"config", "workers", "threads"}),
    ("drill", "DrillConfig", set(), {"threads"}),
])
def test_the_flags_are_the_config_fields_and_their_help_shows_each_default(command, cls, skip, extra):
    """A setting is stated once, as a field; its flag, help and default come from there."""
    import argparse
    import dataclasses

    from budgetnas.search import cli
    from budgetnas.search.drill.config import DrillConfig
    from budgetnas.search.engine.train import Engine
    from budgetnas.search.study.config import StudyConfig

    extra = extra | {f.name for f in dataclasses.fields(Engine)}  # and each of the engine's fields
    config = {"StudyConfig": StudyConfig, "DrillConfig": DrillConfig}[cls]
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {a.dest for a in sub._actions if a.dest != "help"}
    names = {f.name for f in dataclasses.fields(config)} - skip
    assert flags - extra == names  # every field a flag, every flag a field (or one of the engine's)
    for a in sub._actions:
        f = next((f for f in dataclasses.fields(config) if f.name == a.dest), None)
        if f is not None and not a.required:  # the help names the default: the field's own, or its comment's
            assert f"(default: {'none' if f.default is None else f.default})" in a.help or "default" in a.help, a.dest


def test_seeds_is_a_count_everywhere_and_no_old_spelling_is_left(capsys):
    from budgetnas.search import cli

    assert cli.parser().parse_args(["baseline", "exp4", "--seeds", "3"]).seeds == 3  # as verify's --seeds 3
    assert cli.parser().parse_args(["verify", "x.py", "--seeds", "3"]).seeds == 3
    for old in (["baseline", "exp4", "--seeds", "0", "4"], ["baseline", "exp4", "--seed", "7"],
                ["verify", "x.py", "--target", "99"], ["verify", "x.py", "--seeds", "0"]):
        with pytest.raises(SystemExit):
            cli.parser().parse_args(old)
