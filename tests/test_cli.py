"""Bad input: one line on stderr, exit code 2, no traceback, nothing written to the study."""

import os
import subprocess
import sys

import optuna
import pytest


def budgetnas(*args, cwd):
    env = {**os.environ, "BUDGETNAS_DATA": str(cwd / "nowhere")}
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120, check=False)


def assert_one_line_error(result, match):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("budgetnas: error:"), result.stderr
    assert "Traceback" not in result.stderr and match in lines[0]


@pytest.fixture
def cwd(tmp_path):
    (tmp_path / "bad.toml").write_text('[study]\nname = "x"\nbudgett = 1\n')
    (tmp_path / "typed.toml").write_text('[study]\nbudget = "8k"\n')
    return tmp_path


CASES = [
    (["baseline", "1", "--data-dir", "/nonexistent"], "/nonexistent/MNIST/raw"),
    (["baseline", "9"], "unknown baseline"),
    (["search", "--study", "x", "--dataset", "cifar", "--trials", "1"], "unknown dataset"),
    (["search", "--study", "x", "--budget", "0"], "budget must be a positive"),
    (["search", "--study", "x", "--budget", "50"], "smallest model in the space"),
    (["search", "--study", "x", "--storage", "redis://localhost/0"], "storage must be"),
    (["search", "--study", "x", "--storage", "postgresql://u:p@127.0.0.1:1/db", "--data-dir", "DATA",
      "--val-size", "200"],
     "cannot open storage"),
    (["search", "--study", "x", "--workers", "0"], "workers must be >= 1"),
    (["search", "--config", "bad.toml"], "unknown [study] keys ['budgett']"),
    (["search", "--config", "typed.toml"], "budget must be int"),
    (["search", "--config", "missing.toml"], "no such config file"),
    (["status", "--study", "nothing"], "no study database"),
    (["status"], "which study?"),
    (["status", "--config", "missing.toml"], "no such config file"),
    (["export", "--study", "nothing"], "no study database"),
    (["verify", "missing.py"], "no such file"),
]


@pytest.mark.parametrize("args, match", CASES, ids=[" ".join(a[:2]) + ":" + m[:20] for a, m in CASES])
def test_bad_input_is_one_line_and_exit_2(args, match, cwd, data_root):
    args = [str(data_root) if a == "DATA" else a for a in args]
    assert_one_line_error(budgetnas(*args, cwd=cwd), match)
    assert not list(cwd.glob("studies/*.db")) or args[0] != "search"  # no study was created by a refused search


def test_truncated_data_file(cwd, data_root):
    path = data_root / "MNIST/raw/train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    result = budgetnas("baseline", "1", "--data-dir", str(data_root), cwd=cwd)
    assert_one_line_error(result, "train-labels-idx1-ubyte.gz")


def test_export_from_a_study_with_no_completed_trial(cwd):
    (cwd / "studies").mkdir()
    optuna.create_study(study_name="empty", storage=f"sqlite:///{cwd}/studies/empty.db")
    assert_one_line_error(budgetnas("export", "--study", "empty", cwd=cwd), "has no completed trial")


def test_resuming_with_a_changed_budget(cwd, data_root):
    common = ["search", "--study", "r", "--trials", "1", "--epochs", "1", "--subset", "200", "--val-size", "200", "--no-warm-start",
              "--data-dir", str(data_root)]
    assert budgetnas(*common, "--budget", "8000", cwd=cwd).returncode == 0
    before = (cwd / "studies/r.db").read_bytes()
    assert_one_line_error(budgetnas(*common, "--budget", "5000", cwd=cwd), "budget: was 8000, now 5000")
    assert (cwd / "studies/r.db").read_bytes() == before  # nothing written
