"""`budgetnas bench`: each measurement runs, and the tables compute speedups per repeat."""

from budgetnas import baselines
from budgetnas.search.engine.bench import ENGINES, measure, search_engine, table, workers_table


def test_measure_reference_and_ours(data_root):
    arch = baselines.get("exp4").arch.to_json()
    for name in ("reference", "ours fp32"):
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
    speed = {"reference": 100, "ours fp32": 500, "ours bf16": 300, "ours fp32+compile": 400, "ours bf16+compile": 350}
    out = table([{**base, "engine": name, "train_img_s": speed[name]} for name in ENGINES])
    assert search_engine("cuda") == "ours fp32" and out.splitlines()[-1] == "speedup=5.00"
    assert "peak GPU MB" in out.splitlines()[0]


def test_workers_table_names_the_faster_count():
    rows = [{"workers": 1, "threads": 2, "train_img_s": 100.0}, {"workers": 2, "threads": 1, "train_img_s": 130.0}]
    out = workers_table(rows)
    assert out.splitlines()[-1] == "best_workers=2" and "1.30" in out
