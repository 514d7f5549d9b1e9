"""One installed package: `pip install .` puts `budgetnas` in site-packages and nothing else, and
the command works from any directory."""

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_only_the_budgetnas_package(tmp_path):
    src = tmp_path / "src"  # a clean copy: an in-tree build would reuse whatever an old build/ holds
    for name in ("space", "search", "baselines"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("budgetnas-*.whl"))).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"budgetnas"}
    assert {n.split("/")[1] for n in names if ".dist-info/" not in n} == {"space", "search", "baselines"}
    assert all(n.endswith(".py") for n in names if ".dist-info/" not in n)  # code only, no results


def test_the_command_runs_outside_the_repository(tmp_path):
    budgetnas = Path(sys.executable).parent / "budgetnas"
    out = subprocess.run([str(budgetnas), "search", "--study", "x", "--dry-run", "--trials", "3", "--budget", "20000"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "study x: created" in out.stdout and "Pareto front" in out.stdout
    assert not any(p.name in ("space", "search", "baselines") for p in tmp_path.iterdir())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed without -e, as a user gets it: a wheel unpacked into a folder of its own
    (put first on PYTHONPATH, so it shadows the editable checkout; its subprocesses inherit it)."""
    tmp = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target",
                    str(tmp / "site"), str(ROOT)], check=True, capture_output=True)
    return tmp / "site"


def test_every_command_runs_from_anywhere_on_the_installed_package(installed, tmp_path):
    """Every command, the ones that start subprocesses (search and verify workers, bench) included, from a
    folder outside the repository, on tiny synthetic data."""
    from tests.conftest import write_npz

    env = {**os.environ, "PYTHONPATH": str(installed), "BUDGETNAS_DATA": str(tmp_path / "nowhere")}
    data = str(write_npz(tmp_path / "d.npz", size=(16, 16), classes=3, n_train=400, n_test=100))

    def budgetnas(*args: str, code: int = 0) -> str:
        out = subprocess.run([sys.executable, "-c", "from budgetnas.search.cli import main; main()", *args], check=False,
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == code and "Traceback" not in out.stderr, (args, out.stdout[-2000:], out.stderr[-2000:])
        return out.stdout

    where = subprocess.run([sys.executable, "-c", "import budgetnas.search.cli as m; print(m.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed))  # the installed copy runs, not the checkout
    study = ["--study", "s", "--storage", "journal:studies/s.journal"]
    budgetnas("search", *study, "--dataset", data, "--budget", "3000", "--trials", "2", "--epochs", "1",
              "--val-size", "50", "--workers", "2", "--no-warm-start")
    assert "best:" in budgetnas("status", *study)
    budgetnas("export", *study, "-o", "m.py")
    budgetnas("export", *study, "-o", "a.json")
    budgetnas("render", "a.json", "-o", "r.py")
    budgetnas("verify", "m.py", "--dataset", data, "--seeds", "2", "--jobs", "2", "--epochs", "1")
    budgetnas("confirm", *study, "--top", "1", "--seeds", "1")
    budgetnas("report", *study)
    budgetnas("pruners", *study)
    budgetnas("baseline", "exp4", "--dataset", data, "--epochs", "1", "--out", "bl")
    assert "best_workers=1" in budgetnas("bench", "--arch", "a.json", "--dataset", data, "--images", "64",
                                         "--repeats", "1", "--workers", "1")
    budgetnas("drill", "--name", "dr", "--dataset", data, "--budget", "3000", "--hours", "0.015", "--epochs", "1",
              "--val-size", "50", "--seeds", "1", "--workers", "1")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    dashboard = subprocess.Popen([sys.executable, "-c", "from budgetnas.search.cli import main; main()", "dashboard",
                                  *study, "--port", port], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "optuna-dashboard for study 's'" in dashboard.stdout.readline()
    finally:
        dashboard.kill()
        dashboard.wait()
    assert not any(p.name in ("space", "search", "baselines") for p in tmp_path.iterdir())
