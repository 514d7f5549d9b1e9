import importlib.util
import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from budgetnas import baselines
from budgetnas.search.cli import main
from budgetnas.search.engine import data as D
from budgetnas.search.engine.render import render
from budgetnas.search.engine.verify import distribution_line, fit_to, load_candidate, summarise, verdict, verdict_line
from budgetnas.space import Arch, build, count_params
from budgetnas.space.errors import BadInput
from tests.conftest import TINY, random_archs

ARCHS = random_archs(12, seed=5) + [b.arch for b in baselines.all_baselines()]


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{count_params(a)}p")
def test_rendered_module_matches_the_arch(arch, tmp_path):
    path = tmp_path / "m.py"
    path.write_text(render(arch, {"Study": "test"}))
    m = load_module(path)
    assert m.PARAMS == count_params(arch) == sum(p.numel() for p in m.Net().parameters())
    torch.manual_seed(0)
    ours = [p.detach().clone() for p in build(arch).parameters()]
    torch.manual_seed(0)
    theirs = list(m.Net().parameters())
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))  # same layers, same order


def test_rendered_module_passes_ruff(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(render(baselines.get("exp4").arch, {"Study": "test"}))
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", str(path)], capture_output=True, check=False)
    assert result.returncode == 0, result.stdout.decode()


@pytest.mark.parametrize("ema", [0.0, 0.99])
def test_rendered_module_trains_with_torch_alone(tmp_path, data_root, ema):
    """Run it in a fresh interpreter (clean PYTHONPATH) where the project's packages cannot import."""
    arch = baselines.get("exp3").arch.with_recipe(epochs=1, ema=ema)
    path = tmp_path / "model.py"
    path.write_text(render(arch, {"Study": "test"}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    block = "import sys, runpy; sys.modules.update(budgetnas=None, space=None, search=None, baselines=None); "
    run = f"sys.argv = ['model.py', '--data-dir', {str(data_root / 'MNIST/raw')!r}, '--device', 'cpu']; "
    out = subprocess.run([sys.executable, "-I", "-c", block + run + f"runpy.run_path({str(path)!r}, run_name='__main__')"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert "7,570-parameter" not in out.stdout and "epoch  1  loss" in out.stdout


def record(tests, seed=0, diverged=None):
    """One run's record as the seed executor returns it (engine/seeds.py)."""
    return {"seed": seed, "params": 5000, "diverged": diverged,
            "history": [{"epoch": i + 1, "train_acc": 99.0, "test_acc": a, "seconds": 1.0} for i, a in enumerate(tests)]}


def test_verdict_needs_every_last3_epoch_of_every_seed():
    good = summarise(record([98.0, 99.5, 99.41, 99.45]))
    dip = summarise(record([99.6, 99.5, 99.39, 99.45], seed=1))
    assert verdict([good, good], 99.40)["passed"]
    v = verdict([good, dip], 99.40)
    assert not v["passed"] and v["min_last3"] == 99.39
    assert verdict_line(v, 5000).startswith("FAIL params=5000 min_last3=99.39%")
    early_dip = summarise(record([90.0, 99.5, 99.41, 99.45]))
    assert verdict([early_dip], 99.40)["passed"]  # only the last 3 epochs count


def test_verdict_reports_the_distribution_over_seeds():
    runs = [summarise(record([99.5, m - 0.01, m, m + 0.01], seed=s)) for s, m in enumerate([99.45, 99.50, 99.38])]
    v = verdict(runs, 99.40)
    assert (v["passes"], v["seeds"], v["worst_seed"]) == (2, 3, 2) and v["passed"] is False
    low, high = v["ci95_mean_last3"]
    assert low < v["mean_last3"] < high and high - low == pytest.approx(2 * 4.303 * statistics.stdev([99.45, 99.50, 99.38]) / 3 ** 0.5)
    assert distribution_line(v).startswith("2/3 seeds pass; mean last-3 95% CI ")
    assert verdict(runs[:1], None)["ci95_mean_last3"] is None and verdict(runs[:1], None)["passes"] is None


def test_a_diverged_seed_is_a_failed_result_not_an_error():
    v = verdict([summarise(record([99.5, 99.6], diverged="loss nan")), summarise(record([99.5] * 4, seed=1))], 99.4)
    assert v["passed"] is False and v["passes"] == 1 and v["worst_seed"] == 0


def test_load_candidate_accepts_baselines_and_files(tmp_path, data_root, capsys):
    data = D.load("mnist", data_root, val_size=0)
    assert fit_to(load_candidate("exp4"), data).params == count_params(baselines.get("exp4").arch)
    assert capsys.readouterr().err == ""
    for old in ("4", "baselines/exp4"):  # 0.1.0 is unreleased: no old spellings kept
        with pytest.raises(BadInput, match="known: exp1, exp2, exp3, exp4"):
            load_candidate(old)
    # a user's module is a module wherever it lives, and named like a standard module it shadows nothing
    (tmp_path / "baselines").mkdir()
    for path in (tmp_path / "m.py", tmp_path / "baselines" / "mine.py", tmp_path / "json.py"):
        path.write_text(render(baselines.get("exp2").arch, {"Study": "t"}))
        assert fit_to(load_candidate(str(path)), data).params == count_params(baselines.get("exp2").arch)
    assert json.loads("[1]") == [1] and json.__file__ != str(tmp_path / "json.py")


def test_verify_counts_the_parameters_itself(tmp_path, data_root):
    path = tmp_path / "m.py"
    source = render(baselines.get("exp2").arch, {"Study": "t"})
    path.write_text(source.replace("PARAMS = 8936", "PARAMS = 4000"))
    with pytest.raises(BadInput, match="says PARAMS = 4000, but its Net has 8936"):
        load_candidate(str(path))


@pytest.mark.parametrize("change", [{}, {"dropout": 0.1}, {"ema": 0.9}, {"label_smoothing": 0.1}],
                         ids=["plain", "dropout", "ema", "label-smoothing"])
def test_the_module_trains_exactly_as_verify_reports(tmp_path, data_root, change):
    """`python MODULE.py --seed S --threads T` and `budgetnas verify MODULE.py` seed S, which
    records the T it trained with: the same per-epoch loss and accuracies, to the last bit (CPU,
    fp32; another T splits the sums otherwise)."""
    recipe = {k: v for k, v in change.items() if k != "dropout"}
    arch = replace(TINY, dropout=change.get("dropout", 0.0)).with_recipe(epochs=2, **recipe)
    path = tmp_path / "m.py"
    path.write_text(render(arch, {"Study": "t"}))
    raw = str(data_root / "MNIST" / "raw")
    main(["verify", str(path), "--seeds", "2", "--data-dir", str(data_root), "--threads", "2", "--device", "cpu",
          "--json", str(tmp_path / "verify.json"), "--bar", "1"])
    run = json.loads((tmp_path / "verify.json").read_text())["runs"][1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, str(path), "--data", raw, "--seed", "1", "--device", "cpu", "--threads",
                    str(run["threads"]), "--history", str(tmp_path / "module.json")], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    ours, theirs = run["history"], json.loads((tmp_path / "module.json").read_text())
    keys = ("epoch", "train_loss", "train_acc", "test_acc", "lr")
    assert [{k: r[k] for k in keys} for r in ours] == [{k: r[k] for k in keys} for r in theirs]
    assert len(ours) == 2


def test_verify_cli_on_synthetic_data(tmp_path, data_root, capsys):
    path = tmp_path / "m.py"
    path.write_text(render(TINY.with_recipe(epochs=6), {"Study": "t"}))
    args = ["verify", str(path), "--seeds", "2", "--data-dir", str(data_root), "--threads", "1"]
    with pytest.raises(SystemExit) as e:  # 3 epochs on synthetic data: nowhere near 99.99% -> FAIL, exit 1
        main(args + ["--bar", "99.99", "--json", str(tmp_path / "v.json")])
    captured = capsys.readouterr()
    assert e.value.code == 1
    assert captured.out.strip().splitlines()[-2].startswith(f"FAIL params={count_params(TINY)}")
    assert captured.out.strip().splitlines()[-1].startswith("0/2 seeds pass; mean last-3 95% CI")
    record = json.loads((tmp_path / "v.json").read_text())  # what reach-bar keys past runs by (study/curves.py)
    assert (record["dataset"], record["schedule"]) == ("mnist", TINY.recipe.schedule)
    assert json.loads((tmp_path / "v.json").read_text())["verdict"]["passed"] is False
    main(args + ["--bar", "40", "--jobs", "2"])  # but it does learn (chance is 10%); seeds in parallel
    assert capsys.readouterr().out.strip().splitlines()[-2].startswith(f"PASS params={count_params(TINY)}")


@pytest.mark.parametrize("name", ['x""";import os;os.system("touch INJECTED");"""', "a\\\"\"\"\\", "tab\there\x00nul", "'''"])
def test_text_from_a_study_cannot_become_code_in_the_module(tmp_path, name):
    import ast

    from budgetnas.search.engine.render import render

    source = render(baselines.get("exp4").arch, {"Study": name, name: "key too"})
    tree = ast.parse(source)  # still one valid module
    assert f"Study: {name}" in ast.get_docstring(tree, clean=False)  # the text itself, as data
    path = tmp_path / "m.py"
    path.write_text(source)
    subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(path)!r})"], cwd=tmp_path, check=True)
    assert not (tmp_path / "INJECTED").exists()


def kept_modules() -> list[str]:
    """The studies whose rendered module .gitignore keeps (`!studies/NAME/best.py`): the headlines."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().splitlines()
    return [line.split("/")[1] for line in lines if line.startswith("!studies/") and line.endswith("/best.py")]


@pytest.mark.parametrize("study", kept_modules())
def test_a_headline_module_is_what_render_makes_of_its_arch(study):
    """The headline modules are the current template's rendering of their Arch below the docstring
    (which carries where each came from): a change to the loop, the reader or the template shows
    here until they are rendered again (`budgetnas render studies/NAME/best.json`)."""
    from pathlib import Path

    from budgetnas.search.engine.render import render_file

    folder = Path(__file__).resolve().parent.parent / "studies" / study
    made, committed = render_file(folder / "best.json"), (folder / "best.py").read_text()
    assert made.split('"""', 2)[2] == committed.split('"""', 2)[2]  # all below the docstring


def test_each_committed_arch_is_the_model_its_records_name():
    """studies/ keeps each verified or exported trial as Arch JSON (+ provenance); its parameter
    count is the one its provenance and every verify record of it state."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    provenances = sorted(root.glob("studies/*/*.provenance.json"))
    assert len(provenances) >= 18
    for p in provenances:
        arch = Arch.read(str(p).removesuffix(".provenance.json") + ".json")
        stated = re.search(r"this model has (\d+)", json.loads(p.read_text())["Budget"])
        assert int(stated[1]) == count_params(arch), p
    checked = 0
    for record in root.glob("studies/*/verify*.json"):
        runs = json.loads(record.read_text())
        arch_json = root / Path(runs["target"]).with_suffix(".json")
        if runs["target"].startswith("studies/") and arch_json.is_file():
            assert {r["params"] for r in runs["runs"]} == {count_params(Arch.read(arch_json))}, record
            checked += 1
    assert checked >= 18


@pytest.mark.parametrize("path, docs, word", [
    ("studies/mnist-drill-7k-gpu/verify.json", ("README.md", "studies/README.md"), "PASS"),
    ("studies/mnist-drill-7k-gpu/verify-cpu.json", ("studies/README.md",), "PASS"),
    ("studies/mnist-drill-7k-gpu/verify-cpu-6.json", ("README.md", "studies/README.md"), "PASS"),
    ("studies/mnist-tail/verify.json", ("studies/README.md",), "PASS"),
    ("studies/mnist-drill-5k-4/verify-6.json", ("README.md", "studies/README.md"), "FAIL"),
    ("docs/parity-7k-gpu-bf16-cl.json", ("studies/README.md",), "PASS"),
    ("docs/parity-exp4-fp32.json", ("studies/README.md",), "FAIL"),
    ("docs/parity-exp4-bf16-cl.json", ("studies/README.md",), "FAIL"),
])
def test_the_headline_numbers_are_those_its_verify_json_records(path, docs, word):
    """A verify line quoted in the docs is verify's own line for the committed verify JSON, not typed by hand."""
    from pathlib import Path

    from budgetnas.search.engine.verify import distribution_line, verdict_line

    root = Path(__file__).resolve().parent.parent
    record = json.loads((root / path).read_text())
    line = verdict_line(record["verdict"], record["runs"][0]["params"])
    assert line.startswith(word)
    spread = distribution_line(record["verdict"])  # pass count k/n, where the record has it
    for doc in docs:
        assert f"# {line}" in (root / doc).read_text(), doc
        assert not spread or f"# {spread}" in (root / doc).read_text(), doc


def test_render_writes_an_arch_json_as_the_module_verify_takes(tmp_path, capsys):
    arch = baselines.get("exp2").arch
    (tmp_path / "m.json").write_text(arch.to_json() + "\n")
    (tmp_path / "m.provenance.json").write_text(json.dumps({"Study": 'a "quoted" name\n""" + 1'}))  # escaped
    main(["render", str(tmp_path / "m.json")])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'm.py'}"
    assert load_candidate(str(tmp_path / "m.py")).params == count_params(arch)  # it imports, and is that Arch
    spec = importlib.util.spec_from_file_location("m", tmp_path / "m.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert 'Study: a "quoted" name\n""" + 1' in module.__doc__  # the text as given, not code
    json_cand = load_candidate(str(tmp_path / "m.json"))  # verify takes the Arch JSON itself too
    assert json_cand.params == count_params(arch) and json_cand.takes == ((1, 28, 28), 10)


@pytest.mark.parametrize("text, match", [
    (None, "cannot read it"),
    ("not json", "not an architecture JSON"),
    ("[1, 2]", "not an architecture JSON"),
    ('{"blocks": [{"type": "conv", "out": -3}]}', "out must be a whole number >= 1"),
    ('{"blocks": [{"type": "conv", "out": "8"}]}', "out must be a whole number >= 1"),
    ('{"blocks": [{"type": "pool", "size": 2}]}', "needs at least one Conv"),
    ('{"blocks": [{"type": "conv", "out": 8, "k": 40}]}', "shrinks"),
])
@pytest.mark.parametrize("command", ["render", "verify"])
def test_a_bad_arch_json_is_one_line_and_exit_2(tmp_path, capsys, text, match, command):
    path = tmp_path / "a.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as e:
        main([command, str(path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("budgetnas: error:") and match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.py").exists()
