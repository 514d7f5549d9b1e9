import math
from functools import partial

import pytest
import torch

from budgetnas.search.engine.data import load
from budgetnas.search.engine.loop import Diverged, augment, ema_decay, ema_split, ema_update, evaluate
from budgetnas.search.engine.train import Engine, bf16_pays, channels_last_pays, fast_masks_pay, train
from budgetnas.space import BadInput, build
from tests.conftest import TINY


def fit(arch, data, **kw):
    return train(partial(build, arch), arch.recipe, data, progress=False, engine=Engine("cpu"), **kw)


def test_tiny_training_learns(data_root):
    data = load("mnist", data_root, val_size=200)
    history = fit(TINY, data, eval_test=True)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_acc"] > 60 and history[-1]["test_acc"] > 60  # chance is 10%
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_training_is_deterministic_given_a_seed(data_root):
    data = load("mnist", data_root, val_size=200)
    arch = TINY.with_recipe(epochs=1)
    a, b = fit(arch, data, seed=3), fit(arch, data, seed=3)
    c = fit(arch, data, seed=4)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(a) == strip(b) and strip(a) != strip(c)


@pytest.mark.parametrize("schedule", ["none", "step", "onecycle", "cosine"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_schedule_and_optimizer_runs(data_root, schedule, optimizer):
    data = load("mnist", data_root, val_size=200, subset=256)
    arch = TINY.with_recipe(schedule=schedule, optimizer=optimizer, epochs=2, step_every=1)
    assert len(fit(arch, data)) == 2


def test_ema_decay_warms_up_then_holds():
    assert ema_decay(0.998, 0) == pytest.approx(0.1)  # the first averages follow the model
    assert ema_decay(0.998, 100) < 0.92 < ema_decay(0.998, 1000) < 0.998 == ema_decay(0.998, 10**6)


def test_ema_update_averages_floats_and_copies_counters():
    avg, cur, n_avg, n_cur = torch.zeros(3), torch.ones(3), torch.tensor(1), torch.tensor(7)
    ema_update(*ema_split([(avg, cur), (n_avg, n_cur)]), 0.75)
    assert torch.allclose(avg, torch.full((3,), 0.25)) and n_avg.item() == 7


def test_ema_changes_what_is_scored_not_how_the_model_trains(data_root):
    data = load("mnist", data_root, val_size=200)
    plain, averaged = fit(TINY, data, seed=1), fit(TINY.with_recipe(ema=0.99), data, seed=1)
    assert [h["train_loss"] for h in plain] == [h["train_loss"] for h in averaged]
    assert [h["val_acc"] for h in plain] != [h["val_acc"] for h in averaged]
    assert averaged[-1]["val_acc"] > 60  # chance is 10%


def test_label_smoothing_is_the_loss_trained_on(data_root):
    """With smoothing e over K classes no model's loss can go below the entropy of the smoothed
    target; the plain run's does, so the recipe field reached the loss."""
    data = load("mnist", data_root, val_size=200)
    e, k = 0.5, TINY.classes
    hit, miss = 1 - e + e / k, e / k
    floor = -(hit * math.log(hit) + (k - 1) * miss * math.log(miss))
    plain, smoothed = fit(TINY, data, seed=1), fit(TINY.with_recipe(label_smoothing=e), data, seed=1)
    assert plain[-1]["train_loss"] < floor <= min(h["train_loss"] for h in smoothed) + 1e-6
    assert smoothed[-1]["val_acc"] > 60  # chance is 10%: it still learns the labels


def test_nan_loss_raises_diverged(data_root):
    data = load("mnist", data_root, val_size=200, subset=256)
    arch = TINY.with_recipe(optimizer="sgd", lr=1e12, schedule="none", epochs=2)
    with pytest.raises(Diverged, match="loss became"):
        fit(arch, data)


def test_callback_can_stop_training(data_root):
    data = load("mnist", data_root, val_size=200, subset=256)
    seen = []

    def stop(record):
        seen.append(record["epoch"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(TINY, data, on_epoch=stop)
    assert seen == [1]


def test_augment_keeps_shape_and_moves_pixels():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 13:15] = 1.0
    gen = torch.Generator().manual_seed(0)
    y = augment(x, rotate=15, translate=0.1, gen=gen)
    assert y.shape == x.shape and not torch.allclose(x, y)
    assert augment(x, 0, 0, gen) is x


def test_engine_resolves_its_autos():
    device, bf16, compiled, channels_last, fast = Engine("cpu", "fp32", "auto", "auto").resolve()
    assert device.type == "cpu" and not bf16 and not compiled and channels_last and fast  # compile's auto is off
    assert Engine("cpu", "bf16", "off", "off", "torch").resolve()[1:] == (True, False, False, False)
    assert Engine("cpu", "fp32", "on").resolve()[2]
    assert Engine("cpu", "bf16").pinned() == Engine("cpu", "bf16", "off", "on", "fast")
    assert Engine("cpu", "auto").pinned().precision in ("bf16", "fp32")
    with pytest.raises(BadInput, match="precision must be"):
        Engine(precision="fp16")
    with pytest.raises(BadInput, match="compile must be"):
        Engine(compile="yes")
    with pytest.raises(BadInput, match="channels_last must be"):
        Engine(channels_last="nhwc")


def test_auto_engine_is_fp32_eager_on_cuda():  # `bench --device cuda`: bf16 and compile were both slower there
    cuda = torch.device("cuda")  # a device object only: no GPU needed
    assert not bf16_pays(cuda) and not channels_last_pays(cuda) and not fast_masks_pay(cuda)


def test_channels_last_training_learns_and_its_weights_load_into_a_plain_model(data_root):
    """The search stages' layout on a CPU: NHWC weights and batches, trained and evaluated so; the
    weights it leaves are ordinary ones, which a plain (NCHW) model scores the same."""
    data = load("mnist", data_root, val_size=200, subset=1000)
    arch = TINY.with_recipe(epochs=2, ema=0.0)
    built = []

    def make():
        built.append(build(arch))
        return built[-1]

    history = train(make, arch.recipe, data, progress=False, engine=Engine("cpu", "bf16", "off", "on"))
    assert history[-1]["val_acc"] > 40 and history[-1]["train_loss"] < history[0]["train_loss"]
    conv = [p for p in built[0].parameters() if p.dim() == 4][-1]  # 8 -> 12 channels: the layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain = build(arch)
    plain.load_state_dict(built[0].state_dict())
    assert abs(evaluate(plain, data.val.images, data.val.labels, data.mean, data.std) - history[-1]["val_acc"]) <= 0.5


def test_compiled_bf16_training_learns(data_root):
    """The fast path real runs take: torch.compile + bf16 autocast, with an odd-sized last batch (eager)."""
    data = load("mnist", data_root, val_size=200, subset=1000)
    arch = TINY.with_recipe(epochs=2)
    history = train(partial(build, arch), arch.recipe, data, progress=False, engine=Engine("cpu", "bf16", "on"))
    assert history[-1]["val_acc"] > 40 and history[-1]["train_loss"] < history[0]["train_loss"]
