"""One installed package: `pip install .` puts `budgetnas` in site-packages and nothing else, and
the command works from any directory."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
