"""The search stages' fast dropout masks (engine/masks.py): torch's dropout in law, not in draws."""

from dataclasses import replace
from functools import partial

import pytest
import torch
from torch import nn

from budgetnas.search.engine.data import load
from budgetnas.search.engine.masks import FastDropout, with_fast_masks
from budgetnas.search.engine.train import VERIFY_ENGINE, Engine, train
from budgetnas.space import BadInput, build
from tests.conftest import TINY


@pytest.mark.parametrize("p", [0.025, 0.1, 0.5])
def test_fast_masks_drop_at_the_rate_and_keep_the_mean(p):
    torch.manual_seed(0)
    drop = FastDropout(p).train()
    x = torch.ones(64, 8, 20, 20)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    n = x.numel()
    assert abs((1 - kept) - p) < 4 * (p * (1 - p) / n) ** 0.5  # four standard errors of a Bernoulli rate
    assert y.mean().item() == pytest.approx(1.0, abs=4 * (p / (1 - p) / n) ** 0.5)  # scaled by 1 / (1 - p)
    values = y.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-4)
    lanes = (y[:, :4] != 0).float().reshape(-1, 4).mean(0)  # neighbours come from one 64-bit draw:
    assert (lanes - (1 - p)).abs().max().item() < 0.02  # no lane of the four is biased (a sign bit once was)


def test_fast_masks_follow_the_layout_and_the_mode():
    """In channels last the mask is laid out as the activation is, so the output keeps its layout;
    in eval mode and at p = 0 it is the identity; the draws follow torch's seed."""
    x = torch.randn(16, 6, 9, 9).contiguous(memory_format=torch.channels_last)
    drop = FastDropout(0.2).train()
    torch.manual_seed(1)
    y = drop(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    ones = torch.ones_like(x)
    torch.manual_seed(1)
    nhwc = drop(ones).permute(0, 2, 3, 1).reshape(-1)
    torch.manual_seed(1)
    assert torch.equal(drop(ones.contiguous()).reshape(-1), nhwc)  # the draws run in memory order in either layout
    torch.manual_seed(1)
    assert torch.equal(y, x * drop(ones))
    torch.manual_seed(2)
    assert not torch.equal(drop(x), y)
    assert drop.eval()(x) is x and FastDropout(0.0).train()(x) is x


def test_with_fast_masks_swaps_every_dropout_and_keeps_the_weights():
    arch = replace(TINY, dropout=0.1)
    model = build(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = with_fast_masks(model)
    assert swapped is model
    rates = [m.p for m in model.modules() if isinstance(m, FastDropout)]
    assert rates and set(rates) == {0.1} and not any(type(m) is nn.Dropout for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_engine_picks_the_masks_and_verify_keeps_torchs(data_root):
    """Auto means fast on a CPU; Verify's engine keeps nn.Dropout (the exported module's own), so
    its runs do not depend on this setting; a fast-mask training learns and differs from torch's."""
    assert Engine("cpu").pinned().masks == "fast" and Engine("cpu", masks="torch").resolve()[4] is False
    assert replace(Engine("cpu"), **VERIFY_ENGINE).pinned().masks == "torch"
    with pytest.raises(BadInput, match="masks must be auto, fast or torch"):
        Engine(masks="bits")
    data = load("mnist", data_root, val_size=200, subset=1000)
    arch = replace(TINY, dropout=0.1).with_recipe(epochs=2)
    runs = {m: train(partial(build, arch), arch.recipe, data, progress=False, engine=Engine("cpu", "fp32", masks=m))
            for m in ("fast", "torch")}
    assert runs["fast"][-1]["train_loss"] < runs["fast"][0]["train_loss"] and runs["fast"][-1]["val_acc"] > 40
    assert runs["fast"][-1]["train_loss"] != runs["torch"][-1]["train_loss"]


def test_a_model_without_dropout_trains_the_same_with_either_masks(data_root):
    """Fast masks touch nothing else: exp4 (dropout 0) and every other dropout-free model train
    bit for bit as before, so their parity records stand for both settings."""
    data = load("mnist", data_root, val_size=200, subset=500)
    arch = TINY.with_recipe(epochs=1)
    assert arch.dropout == 0
    runs = [train(partial(build, arch), arch.recipe, data, progress=False, engine=Engine("cpu", "bf16", "off", "on", m))
            for m in ("fast", "torch")]
    assert [(h["train_loss"], h["val_acc"]) for h in runs[0]] == [(h["train_loss"], h["val_acc"]) for h in runs[1]]
