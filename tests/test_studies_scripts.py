"""The scripts under studies/ that made committed files or quoted numbers, run again: what they
made is what is committed, and what docs quote is what they print."""

import gzip
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from budgetnas.space import Arch, Conv, Pool
from tests.conftest import idx_bytes, synthetic_split, write_idx_dataset

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"


def test_make_warm_remakes_the_committed_warm_starts(tmp_path):
    copy = tmp_path / "studies"
    shutil.copytree(STUDIES, copy, ignore=lambda d, names: [n for n in names if n.endswith((".png", ".journal", ".md"))])
    for study, makes in (("mnist-sep", "warm-*-sep-x*.json"), ("mnist-sep-wide", "warm-*-last*.json")):
        for old in (copy / study).glob(makes):
            old.unlink()
        subprocess.run([sys.executable, str(copy / study / "make_warm.py")], check=True, capture_output=True)
        made = sorted((copy / study).glob(makes))
        assert made and [p.name for p in made] == sorted(p.name for p in (STUDIES / study).glob(makes))
        for p in made:  # the same Arch (the JSON spells image_size as a pair since)
            assert Arch.read(p) == Arch.read(STUDIES / study / p.name), p.name


def shipped(tmp_path: Path, folder: str = "studies") -> Path:
    """A copy of `folder` as a clone of this checkout would have it: tracked files and new ones
    git does not ignore, none of the build outputs and journals .gitignore leaves out."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", folder], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():  # a tracked file deleted in the work tree is gone from the clone too
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def test_val_vs_test_prints_the_correlation_docs_quote(tmp_path):
    """Run on what CI's clean clone holds, so a record that needs an ignored file fails here too."""
    clone = shipped(tmp_path)
    out = subprocess.run([sys.executable, "studies/val_vs_test.py"], cwd=clone, check=True, capture_output=True,
                         text=True).stdout
    r = re.search(r"Pearson correlation of val and test mean ([+-][\d.]+)", out)[1]
    assert f"Pearson correlation of {r.lstrip('+')} between the two" in (ROOT / "docs/validation.md").read_text()


def correlations(capsys, root: Path) -> dict[str, list[float]]:
    runpy.run_path(str(STUDIES / "val_split/order.py"), run_name="order")["main"](root)
    lines = capsys.readouterr().out.splitlines()[1:]
    return {line.split()[0]: [float(x) for x in line.split()[1:]] for line in lines}


def test_order_finds_a_file_ordered_by_style_and_none_in_a_shuffled_one(tmp_path, capsys):
    raw = write_idx_dataset(tmp_path / "shuffled", n_train=12000, n_test=10)
    shuffled = correlations(capsys, tmp_path / "shuffled")
    assert set(shuffled) == {"ink", "slant"} and all(abs(r) < 0.1 for rs in shuffled.values() for r in rs)
    images, labels = synthetic_split(12000, 0)  # as write_idx_dataset made them, then sorted by ink: "by writer"
    order = np.argsort(images.reshape(len(images), -1).mean(1), kind="stable")
    ordered = tmp_path / "ordered" / "MNIST" / "raw"
    shutil.copytree(raw, ordered)
    (ordered / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images[order])))
    (ordered / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels[order])))
    assert all(r > 0.15 for r in correlations(capsys, tmp_path / "ordered")["ink"][:5])  # lags 1-100


TINY = Arch(blocks=(Conv(4), Pool(2), Conv(6)), classes=10)


def run_script(args, data_root, tmp_path):
    env = {**os.environ, "BUDGETNAS_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], check=False, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_levers_check_runs_each_variant_on_the_same_seeds(tmp_path):
    data_root = tmp_path / "data"
    write_idx_dataset(data_root, n_train=1200, n_test=10)
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    args = [str(STUDIES / "levers/check.py"), "tiny.json", "--val-size", "300", "--seeds", "0", "1", "--jobs", "1",
            "--variant", "base:epochs=2", "--variant", "b64:epochs=2,batch_size=64", "--json", "out.json"]
    done = run_script(args, data_root, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert list(out["summary"]) == ["base", "b64"] and out["summary"]["b64"]["changes"] == {"epochs": 2, "batch_size": 64}
    assert [(r["variant"], r["seed"], len(r["history"])) for r in out["runs"]] == [
        ("base", 0, 2), ("base", 1, 2), ("b64", 0, 2), ("b64", 1, 2)]
    assert out["summary"]["base"]["diff_per_seed"] == [0.0, 0.0]
    bad = run_script([*args[:2], "--variant", "x:nonsense=1", "--json", "bad.json"], data_root, tmp_path)
    assert bad.returncode != 0 and "unknown Recipe field 'nonsense'" in bad.stderr and not (tmp_path / "bad.json").exists()


def test_paired_check_scores_the_raw_model_and_its_averages_in_one_run(tmp_path):
    data_root = tmp_path / "data"
    write_idx_dataset(data_root, n_train=5600, n_test=10)  # its split holds out 5,000 for validation
    (tmp_path / "tiny.json").write_text(TINY.with_recipe(epochs=3).to_json())
    done = run_script([str(STUDIES / "mnist-7k-ema/paired_check.py"), "tiny.json", "0", "out.json"], data_root, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3]
    assert set(out["last3"]) == {"raw", "pbn", "ema0.998", "ema0.999", "ema0.9995"}
    assert all(0 <= h[k] <= 100 for h in out["history"] for k in out["last3"])


def test_bar_curves_prints_what_the_drill_docs_quote():
    out = subprocess.run([sys.executable, "studies/bar_curves.py"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    runs, passing = re.search(r"(\d+) verified runs of mnist, onecycle, 15 epochs; (\d+) reach", out).groups()
    stopped, of_passing, share = re.search(r"stopped: (\d+) of \d+ runs, (\d+) of them passing; .*\((\d+%)\)", out).groups()
    quote = f"{stopped} of {runs} stopped, {of_passing} of the {passing} that passed, {share} of their epochs saved"
    assert quote in (ROOT / "docs/drill.md").read_text()


def seeds_passing(verify_json: Path) -> str:
    record = json.loads(verify_json.read_text())
    return f"{sum(r['min_last3'] >= record['verdict']['target'] for r in record['runs'])}/{len(record['runs'])}"


def test_the_verify_tables_say_k_of_n_as_the_records_do():
    """Every verified model's row in studies/README.md: its verdict and seeds passing, from its verify JSON."""
    text = (STUDIES / "README.md").read_text()
    rows = re.findall(r"^\| `studies/([\w-]+)/(\w+)\.(?:json|py)` \| [\d,]+ \| [^|]+ \| (PASS|FAIL) (\d+/\d+) \|", text, re.MULTILINE)
    drills = re.findall(r"^\| (mnist-drill-[\w-]+) \| [\d,]+ \| [\d,]+ params, \**(PASS|FAIL)\** (\d+/\d+)", text, re.MULTILINE)
    assert len(rows) >= 18 and len(drills) >= 10
    for study, name, verdict, kn in rows:
        record = STUDIES / study / ("verify.json" if name == "best" else f"verify-{name}.json")
        assert (verdict, kn) == (("PASS" if json.loads(record.read_text())["verdict"]["passed"] else "FAIL"),
                                 seeds_passing(record)), (study, name)
    for study, verdict, kn in drills:
        record = STUDIES / study / "verify.json"
        assert (verdict, kn) == (("PASS" if json.loads(record.read_text())["verdict"]["passed"] else "FAIL"),
                                 seeds_passing(record)), study
