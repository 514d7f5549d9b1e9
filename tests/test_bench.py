"""`budgetnas bench`: each measurement runs, and the tables compute speedups per repeat."""

import json
from dataclasses import replace

import pytest

from budgetnas import baselines
from budgetnas.search.engine.bench import (
    ENGINES,
    STAGES,
    TRAINING_ENGINES,
    engine_label,
    full_training,
    measure,
    search_engine,
    stage_engine,
    table,
    trainings_figures,
    trainings_table,
    workers_table,
)
from budgetnas.search.engine.train import VERIFY_ENGINE, Engine


def test_measure_reference_and_ours(data_root):
    arch = baselines.get("exp4").arch.to_json()
    for name in ("reference", "ours fp32 eager"):
        row = measure(name, arch, 256, ["mnist", str(data_root)], 1)
        assert row["engine"] == name and row["train_img_s"] > 0 and row["eval_img_s"] > 0 and row["peak_rss_mb"] > 0


def test_table_takes_the_median_of_per_repeat_speedups():
    base = {"startup_s": 0.0, "eval_img_s": 1.0, "peak_rss_mb": 1.0}
    rows = []
    for ref, ours in ((100, 250), (200, 300), (100, 200)):  # per-repeat speedups 2.5, 1.5, 2.0
        rows += [{**base, "engine": name, "train_img_s": ref if name == "reference" else ours} for name in ENGINES]
    out = table(rows)
    assert out.splitlines()[-1] == "speedup=2.00" and "2.50, 1.50, 2.00" in out


def test_speedup_is_the_engine_search_uses_on_the_device():
    base = {"startup_s": 0.0, "eval_img_s": 1.0, "peak_rss_mb": 1.0, "peak_gpu_mb": 1.0, "device": "cuda"}
    speed = {"reference": 100, "ours fp32 eager": 500} | {name: 300 for name in ENGINES if name not in ("reference", "ours fp32 eager")}
    out = table([{**base, "engine": name, "train_img_s": speed[name]} for name in ENGINES])
    assert search_engine("cuda") == "ours fp32 eager" and out.splitlines()[-1] == "speedup=5.00"
    assert "peak GPU MB" in out.splitlines()[0]


def test_workers_table_names_the_faster_count():
    rows = [{"workers": 1, "threads": 2, "train_img_s": 100.0}, {"workers": 2, "threads": 1, "train_img_s": 130.0}]
    out = workers_table(rows)
    assert out.splitlines()[-1] == "best_workers=2" and "1.30" in out


# ----------------------------------------------------------------------------- --trainings

SIZES = {"train": 55000, "val": 5000, "test": 10000}


def trow(model, key, worker, train_img_s, eval_img_s=10000.0, startup_s=0.0, repeat=0, workers=2, threads=1,
         precision="fp32", compile_="off"):
    return {"model": model, "params": 7000, "stage_engine": key, "worker": worker, "workers": workers,
            "threads": threads, "repeat": repeat, "epochs": 15, "train_img_s": train_img_s, "eval_img_s": eval_img_s,
            "startup_s": startup_s, "precision": precision, "compile": compile_}


def test_full_training_is_epochs_of_the_stages_images_and_evaluation_plus_start_up():
    row = trow("m", "search", 0, train_img_s=1000.0, eval_img_s=5000.0, startup_s=30.0)
    epoch, full = full_training(row, "search", SIZES)  # 55,000 trained, 5,000 validated
    assert epoch == pytest.approx(55.0 + 1.0) and full == pytest.approx(15 * 56.0 + 30.0)
    epoch, full = full_training(row, "verify", SIZES)  # all 60,000 trained, 10,000 tested
    assert epoch == pytest.approx(60.0 + 2.0) and full == pytest.approx(15 * 62.0 + 30.0)
    with pytest.raises(ValueError):
        full_training(row, "old", SIZES)


def test_trainings_an_hour_sum_the_workers_and_the_ratio_is_measured_in_the_same_run():
    rows = [trow("m", "search", w, train_img_s=1000.0, startup_s=30.0, precision="bf16", compile_="on") for w in (0, 1)]
    rows += [trow("m", "verify", w, train_img_s=600.0) for w in (0, 1)]
    rows += [trow("m", "old", 0, train_img_s=1200.0, workers=1, threads=2)]
    search, verify = trainings_figures(rows, SIZES)
    full = 15 * 55.5 + 30.0  # s, one worker's training of the search stages
    assert search["stage"] == STAGES["search"] and search["new"]["engine"] == "bf16+compile"
    assert search["new"]["per_hour"] == pytest.approx(2 * 3600 / full)  # two workers side by side
    assert search["new"]["training_min"] == pytest.approx(full / 60)
    old_full = 15 * (55000 / 1200 + 0.5)
    assert search["old"]["per_hour"] == pytest.approx(3600 / old_full) and search["old"]["workers"] == 1
    assert search["ratio"] == pytest.approx(2 * old_full / full)
    assert verify["new"]["per_hour"] == pytest.approx(2 * 3600 / (15 * (60000 / 600 + 1.0)))
    assert verify["ratio"] == pytest.approx(2 * (15 * (60000 / 1200 + 1.0)) / (15 * (60000 / 600 + 1.0)))
    out = trainings_table([search, verify]).splitlines()
    assert out[0].startswith("| model |") and "old (fp32 eager, 1 x 2) s/epoch" in out[0]
    assert out[2].startswith("| m | 7,000 | explore/narrow/race | bf16+compile | 2 x 1 | 55.5 | 30.0 |")
    assert out[2].endswith(f"| {search['ratio']:.2f} |")
    assert out[-2] == f"explore/narrow/race: new/old {search['ratio']:.2f} (median {search['ratio']:.2f})"


def test_trainings_ratio_is_the_median_of_per_repeat_ratios_and_absent_without_the_old_way():
    rows = []
    for repeat, (new, old) in enumerate(((1000.0, 500.0), (1000.0, 1000.0), (900.0, 300.0))):
        rows += [trow("m", "search", w, train_img_s=new, eval_img_s=1e12, repeat=repeat) for w in (0, 1)]
        rows += [trow("m", "old", 0, train_img_s=old, eval_img_s=1e12, repeat=repeat, workers=1, threads=2)]
    search = next(f for f in trainings_figures(rows, SIZES) if f["stage"] == STAGES["search"])
    assert search["ratio"] == pytest.approx(4.0)  # per repeat 4.0, 2.0, 6.0
    alone = trainings_figures([r for r in rows if r["stage_engine"] == "search"], SIZES)
    assert [f["stage"] for f in alone] == [STAGES["search"]] and "ratio" not in alone[0] and "old" not in alone[0]
    assert trainings_table(alone).splitlines()[2].endswith("| - | - | - | - |")


def test_stage_engines_are_the_drills():
    assert stage_engine("verify") == Engine(device="cpu", **VERIFY_ENGINE)
    assert stage_engine("old") == Engine(device="cpu", precision="fp32", compile="off", channels_last="off", masks="torch")
    assert stage_engine("search") == Engine(device="cpu").pinned()  # what the drill's auto engine decides here
    compiled = stage_engine("compiled")
    assert (compiled.precision, compiled.compile, compiled.channels_last, compiled.masks) == (
        stage_engine("search").precision, "on", "off", "torch")  # as the search engine was before either
    assert stage_engine("torch-masks") == replace(stage_engine("search"), masks="torch")


def test_engine_labels_name_what_each_adds():
    assert [name for name in ENGINES] == ["reference", "ours fp32 eager", "ours bf16 eager", "ours fp32+compile",
                                          "ours bf16+compile", "ours fp32+channels-last", "ours bf16+channels-last",
                                          "ours bf16+channels-last+fast-masks"]
    assert engine_label(Engine(precision="bf16", compile="on", channels_last="on")) == "bf16+compile+channels-last"


def test_bench_trainings_end_to_end(cli, data_root, tmp_path):
    out = cli("bench", "--trainings", "--arch", "exp4", "--images", "64", "--engines", "verify", "old",
              "--threads", "2", "--data-dir", str(data_root), "--json", "t.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("| exp4 |") and "| verify | fp32 eager | 2 x 1 |" in line for line in lines)
    assert lines[-1].startswith("verify: new/old ")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["sizes"] == {"train": 1100, "val": 100, "test": 300}  # synthetic: 1,200 training images
    assert {(r["stage_engine"], r["workers"], r["threads"]) for r in saved["rows"]} == {("verify", 2, 1), ("old", 1, 2)}
    assert len(saved["rows"]) == 3 and [f["stage"] for f in saved["figures"]] == [STAGES["verify"]]
    assert set(saved["engines"]) < set(TRAINING_ENGINES)


def test_bench_refuses_several_archs_without_trainings(cli, data_root, tmp_path):
    out = cli("bench", "--arch", "exp4", "exp4", "--data-dir", str(data_root), "--images", "64", cwd=tmp_path)
    assert out.returncode == 2 and "several only with --trainings" in out.stderr
    out = cli("bench", "--engines", "old", "--data-dir", str(data_root), "--images", "64", cwd=tmp_path)
    assert out.returncode == 2 and "add --trainings" in out.stderr
    out = cli("bench", "--trainings", "--engines", "old", "--data-dir", str(data_root), "--images", "64", cwd=tmp_path)
    assert out.returncode == 2 and "beside a stage engine" in out.stderr


def test_bench_profile_names_where_a_workers_training_spends_its_time(cli, data_root, tmp_path):
    out = cli("bench", "--profile", "--arch", "exp4", "--images", "128", "--data-dir", str(data_root), "--json", "p.json",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert any(r["op"] == "aten::convolution_backward" for r in rows)  # a training, backward pass included
    assert all(r["self_ms"] > 0 and r["calls"] > 0 for r in rows) and 0 < sum(r["share"] for r in rows) <= 1 + 1e-9
    assert [r["share"] for r in rows] == sorted((r["share"] for r in rows), reverse=True)
    assert f"| {rows[0]['op']} |" in out.stdout
    evals = json.loads((tmp_path / "p.json").read_text())["eval"]
    assert {(r["layout"], r["batch"]) for r in evals} == {(lay, b) for lay in ("NCHW", "channels-last") for b in (64, 256, 1024, 4096)}
    assert all(len({r["acc"] for r in evals if r["layout"] == lay}) == 1 for lay in ("NCHW", "channels-last"))
    assert "the same accuracy at every batch size, in each layout" in out.stdout
    out = cli("bench", "--profile", "--trainings", "--data-dir", str(data_root), cwd=tmp_path)
    assert out.returncode == 2 and "one thing at a time" in out.stderr
