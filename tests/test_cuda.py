"""The CUDA path: skipped without a GPU (CI has none); run on one with `pytest tests/test_cuda.py`."""

import warnings
from functools import partial

import pytest
import torch

from budgetnas import baselines
from budgetnas.search.engine.bench import measure
from budgetnas.search.engine.data import load
from budgetnas.search.engine.train import Engine, train
from budgetnas.space import build
from tests.conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

EXP4 = baselines.get("exp4").arch


def host_syncs(data, precision: str, ema: float) -> int:
    """Synchronizing calls (a device-to-host read, say) during one epoch of exp4's recipe on CUDA."""
    arch = EXP4.with_recipe(epochs=1, ema=ema)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(partial(build, arch), arch.recipe, data, engine=Engine("cuda", precision, "off"), progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("precision,ema", [("fp32", 0.0), ("bf16", 0.0), ("fp32", 0.998)])
def test_no_read_back_per_batch(data_root, precision, ema):
    few = host_syncs(load("mnist", data_root, val_size=100, subset=2 * 128), precision, ema)  # 2 batches
    many = host_syncs(load("mnist", data_root, val_size=100, subset=8 * 128), precision, ema)  # 8 batches
    assert few > 0  # the detector works: copies in, and the epoch's loss and hits read once
    assert many == few  # and nothing more with 4x the batches: no batch waits for the host


def test_cuda_training_learns(data_root):  # as test_train's test_tiny_training_learns does on the CPU
    data = load("mnist", data_root, val_size=200)
    history = train(partial(build, TINY), TINY.recipe, data, engine=Engine("cuda", "fp32", "off"), progress=False)
    assert history[-1]["val_acc"] > 60 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_bench_measures_on_cuda(data_root):
    for name in ("reference", "ours fp32"):
        row = measure(name, EXP4.to_json(), 256, ["mnist", str(data_root)], 1, "cuda")
        assert row["device"] == "cuda" and row["train_img_s"] > 0 and row["peak_gpu_mb"] > 0
