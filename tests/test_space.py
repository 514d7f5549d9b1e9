import optuna
import pytest
import torch

from budgetnas import baselines
from budgetnas.space import Arch, BadInput, Conv, Pool, SpaceConfig, build, count_params, params_of, sample_arch
from budgetnas.space.sample import fits, params_in
from tests.conftest import WIDE, random_archs

# Every knob open, separable stages and the weight average included.






@pytest.mark.parametrize("arch", random_archs(150), ids=lambda a: f"{count_params(a)}p")
def test_count_params_is_exact(arch):
    assert count_params(arch) == sum(p.numel() for p in build(arch).parameters())


@pytest.mark.parametrize("arch", random_archs(20, seed=1), ids=lambda a: f"{count_params(a)}p")
def test_build_forward_shape(arch):
    assert build(arch)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("arch", random_archs(30, seed=2) + [b.arch for b in baselines.all_baselines()])
def test_json_round_trip(arch):
    assert Arch.from_json(arch.to_json()) == arch


@pytest.mark.parametrize("arch", random_archs(40, seed=3), ids=lambda a: f"{count_params(a)}p")
def test_params_of_is_the_inverse_of_sampling(arch):
    assert sample_arch(optuna.trial.FixedTrial(params_of(arch)), WIDE) == arch
    assert fits(WIDE, arch)


def test_separable_stage_is_depthwise_then_1x1():
    params = {**params_of(baselines.get("exp4").arch), "s1_separable": True}
    arch = sample_arch(optuna.trial.FixedTrial(params), WIDE)
    stage1 = arch.blocks[arch.blocks.index(Pool()) + 1 :]
    assert stage1[:3] == (Conv(10, k=1), Conv(10, groups=10), Conv(10, k=1))  # the 1x1 transition, then pairs
    assert count_params(arch) < count_params(baselines.get("exp4").arch)
    with pytest.raises(BadInput, match="depthwise"):  # grouped, but not one group per channel
        params_of(Arch(blocks=(Conv(8), Pool(), Conv(8, groups=2), Conv(8, k=1))))
    with pytest.raises(BadInput, match="3x3 convs"):  # the first stage is never separable
        params_of(Arch(blocks=(Conv(8), Conv(8, groups=8), Conv(8, k=1), Pool(), Conv(8))))


@pytest.mark.parametrize("b", baselines.all_baselines(), ids=lambda b: b.name)
def test_baseline_params_rebuild_the_same_arch(b):
    params = params_of(b.arch)
    assert sample_arch(optuna.trial.FixedTrial(params), epochs=b.arch.recipe.epochs) == b.arch


def test_baselines_enqueue_as_themselves():
    study = optuna.create_study()
    for b in baselines.all_baselines():
        study.enqueue_trial(params_of(b.arch))
    for b in baselines.all_baselines():
        assert sample_arch(study.ask()) == b.arch


def test_params_in_moves_an_arch_into_a_narrower_space():
    exp3 = baselines.get("exp3").arch  # widths 10/16, dropout 0.05, lr 0.02, constant schedule
    narrow = SpaceConfig(stages=(2, 2), convs=(3, 4), channels=(12, 16), channel_step=4, dropout=(0.0, 0.0),
                         lr=(0.05, 0.3), schedule=("onecycle",), bn=(True,), head=("gap",), optimizer=("sgd",))
    assert not fits(narrow, exp3)
    moved = sample_arch(optuna.trial.FixedTrial(params_in(narrow, exp3)), narrow, exp3.recipe.epochs)
    assert fits(narrow, moved)
    assert [b.out for b in moved.blocks if isinstance(b, Conv)] == [12, 12, 16, 12, 12, 16, 16]  # 10 -> 12
    assert (moved.dropout, moved.recipe.lr, moved.recipe.schedule) == (0.0, 0.05, "onecycle")
    assert moved.recipe.rotate == exp3.recipe.rotate  # inside the space already: kept
    with pytest.raises(BadInput, match="optimizer='sgd' is not among"):
        params_in(SpaceConfig(optimizer=("adam", "adamw")), exp3)
    averaged = SpaceConfig(ema=(0.998,))  # a space that fixes a recipe knob moves the arch's value to it
    assert sample_arch(optuna.trial.FixedTrial(params_in(averaged, exp3)), averaged).recipe.ema == 0.998
    assert fits(SpaceConfig(ema=(0.0, 0.998)), exp3.with_recipe(ema=0.998)) and not fits(averaged, exp3)
    with pytest.raises(BadInput, match="without changing its shape"):
        params_in(SpaceConfig(convs=(4, 4)), exp3)


def test_a_model_for_a_larger_image_moves_into_a_space_at_its_own_size():
    """CI stop 40: a drill on 32x32 colour data filled an Explore pick whose unpadded convs a 32x32
    image holds and a 28x28 one does not; moving it into Narrow's space must not read it at 28x28."""
    convs = (Conv(8),) * 4 + (Pool(),) + (Conv(8),) * 3 + (Pool(),) + (Conv(8),)
    colour = Arch(convs, image_size=(32, 32), in_channels=3, classes=12)
    assert fits(SpaceConfig(), colour)
    moved = sample_arch(optuna.trial.FixedTrial(params_in(SpaceConfig(), colour)), SpaceConfig(),
                        image_size=(32, 32), in_channels=3, classes=12)
    assert moved == colour


def test_baseline_targets():
    counts = {b.name: count_params(b.arch) for b in baselines.all_baselines()}
    assert counts["exp1"] < 20_000 and counts["exp2"] < 10_000 and counts["exp4"] < 8_000
    e1, e3, e4 = (baselines.get(n).arch for n in ("exp1", "exp3", "exp4"))
    assert not e1.bn and e1.dropout == 0 and e1.recipe.rotate == 0
    assert e3.head == "gap" and e3.dropout > 0 and e3.recipe.rotate > 0
    assert e4.recipe.schedule != "none" and e4.recipe.epochs <= 15


def test_unknown_baseline_lists_known():
    with pytest.raises(BadInput, match="known: exp1, exp2, exp3, exp4"):
        baselines.get("exp9")


def test_vanishing_image_is_rejected():
    with pytest.raises(BadInput, match="nothing"):
        Arch(blocks=(Conv(4),) * 14)


def test_unrepresentable_arch_is_rejected():
    with pytest.raises(BadInput, match="padded"):
        params_of(Arch(blocks=(Conv(8, pad=1), Conv(8), Pool(), Conv(8))))


def test_space_config_rejects_unknown_and_mistyped():
    with pytest.raises(BadInput, match="unknown"):
        SpaceConfig.from_dict({"chanels": [4, 8]})
    with pytest.raises(BadInput, match="channels"):
        SpaceConfig.from_dict({"channels": ["a", "b"]})
    with pytest.raises(BadInput, match="low <= high"):
        SpaceConfig.from_dict({"channels": [16, 4]})
    assert SpaceConfig.from_dict({"dropout": [0, 0.1], "bn": [True]}).bn == (True,)
