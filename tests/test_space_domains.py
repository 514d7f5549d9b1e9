"""An Arch JSON is checked by each field's type and bounds; the space fits its draws to the data's
image and the budget."""

import json
import math
import subprocess
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from budgetnas import baselines
from budgetnas.space import Arch, Conv, Pool, Recipe, SpaceConfig, count_params, min_params, params_of, sample_arch
from budgetnas.space.errors import BadInput, ShapeError

ROOT = Path(__file__).resolve().parent.parent
VALID = Arch(blocks=(Conv(8), Pool(), Conv(8, k=1), Conv(12, pad=1)), image_size=(28, 28), in_channels=1,
             recipe=Recipe(schedule="step", step_every=3, step_gamma=0.5, rotate=5.0, translate=0.05, ema=0.99))


def edited(path: str, value) -> dict:
    """VALID's JSON object with the value at `path` ("recipe.lr", "blocks.0.out") set, or removed
    where `value` is DELETE."""
    d = json.loads(VALID.to_json())
    *parents, last = path.split(".")
    node = d
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return d


DELETE = object()  # a key to remove

BAD = [  # (where, value, what the message must name)
    # float fields: a finite number (an int will do; not a bool, a string, null, NaN), in range
    ("recipe.lr", True, "Recipe.lr must be a finite number > 0, but got True."),
    ("recipe.lr", None, "Recipe.lr must be a finite number > 0, but got None."),
    ("recipe.lr", "0.1", "Recipe.lr must be a finite number > 0, but got '0.1'."),
    ("recipe.lr", math.nan, "Recipe.lr must be a finite number > 0, but got nan."),
    ("recipe.lr", math.inf, "Recipe.lr must be a finite number > 0, but got inf."),
    ("recipe.lr", 0, "Recipe.lr must be a finite number > 0, but got 0."),
    ("recipe.weight_decay", -1e-4, "Recipe.weight_decay must be a finite number >= 0, but got -0.0001."),
    ("recipe.step_gamma", 0.0, "Recipe.step_gamma must be a finite number in (0, 1], but got 0.0."),
    ("recipe.step_gamma", 1.5, "Recipe.step_gamma must be a finite number in (0, 1], but got 1.5."),
    ("recipe.rotate", -1.0, "Recipe.rotate must be a finite number in [0, 180], but got -1.0."),
    ("recipe.rotate", 181, "Recipe.rotate must be a finite number in [0, 180], but got 181."),
    ("recipe.translate", 1.0, "Recipe.translate must be a finite number in [0, 1), but got 1.0."),
    ("recipe.ema", 1, "Recipe.ema must be a finite number in [0, 1), but got 1."),
    ("recipe.ema", False, "Recipe.ema must be a finite number in [0, 1), but got False."),
    ("dropout", 1.0, "Arch.dropout must be a finite number in [0, 1), but got 1.0."),
    ("dropout", "0.1", "Arch.dropout must be a finite number in [0, 1), but got '0.1'."),
    # int fields: a whole number (not a bool, not 2.5, not even 2.0), in range
    ("recipe.epochs", 2.5, "Recipe.epochs must be a whole number >= 1, but got 2.5."),
    ("recipe.epochs", 0, "Recipe.epochs must be a whole number >= 1, but got 0."),
    ("recipe.epochs", True, "Recipe.epochs must be a whole number >= 1, but got True."),
    ("recipe.batch_size", 64.0, "Recipe.batch_size must be a whole number >= 1, but got 64.0."),
    ("recipe.step_every", 0, "Recipe.step_every must be a whole number >= 1, but got 0."),
    ("classes", 1, "Arch.classes must be a whole number >= 2, but got 1."),
    ("classes", "10", "Arch.classes must be a whole number >= 2, but got '10'."),
    ("in_channels", 0, "Arch.in_channels must be a whole number >= 1, but got 0."),
    ("in_channels", True, "Arch.in_channels must be a whole number >= 1, but got True."),
    ("image_size", [0, 28], "Arch.image_size must be 2 values, each a whole number >= 1, but got (0, 28)."),
    ("image_size", [28], "Arch.image_size must be 2 values, each a whole number >= 1, but got (28,)."),
    ("image_size", [28.0, 28], "Arch.image_size must be 2 values, each a whole number >= 1, but got (28.0, 28)."),
    ("image_size", "28", "Arch.image_size must be 2 values, each a whole number >= 1, but got '28'."),
    ("blocks.0.out", 0, "blocks[0]: Conv.out must be a whole number >= 1, but got 0."),
    ("blocks.0.out", "8", "blocks[0]: Conv.out must be a whole number >= 1, but got '8'."),
    ("blocks.0.out", 8.0, "blocks[0]: Conv.out must be a whole number >= 1, but got 8.0."),
    ("blocks.2.k", 0, "blocks[2]: Conv.k must be a whole number >= 1, but got 0."),
    ("blocks.3.pad", -1, "blocks[3]: Conv.pad must be a whole number >= 0, but got -1."),
    ("blocks.3.pad", True, "blocks[3]: Conv.pad must be a whole number >= 0, but got True."),
    ("blocks.0.groups", 0, "blocks[0]: Conv.groups must be a whole number >= 1, but got 0."),
    ("blocks.1.size", 0, "blocks[1]: Pool.size must be a whole number >= 1, but got 0."),
    ("blocks.1.size", 2.0, "blocks[1]: Pool.size must be a whole number >= 1, but got 2.0."),
    # bool fields: true or false only
    ("bn", "False", "Arch.bn must be true or false, but got 'False'."),
    ("bn", 0, "Arch.bn must be true or false, but got 0."),
    ("bn", None, "Arch.bn must be true or false, but got None."),
    # str fields: among their choices
    ("recipe.optimizer", "rmsprop", "Recipe.optimizer must be one of ['sgd', 'adam', 'adamw'], but got 'rmsprop'."),
    ("recipe.optimizer", 1, "Recipe.optimizer must be one of ['sgd', 'adam', 'adamw'], but got 1."),
    ("recipe.schedule", "linear", "Recipe.schedule must be one of ['none', 'step', 'onecycle', 'cosine'], but got"),
    ("head", "max", "Arch.head must be one of ['gap', 'flatten'], but got 'max'."),
    ("head", None, "Arch.head must be one of ['gap', 'flatten'], but got None."),
    # keys: none unknown, none required missing; objects and lists where they belong
    ("lrate", 0.1, "an Arch has unknown key(s) ['lrate']"),
    ("recipe.lrate", 0.1, "recipe has unknown key(s) ['lrate']"),
    ("blocks.0.kernel", 3, "blocks[0] (a conv) has unknown key(s) ['kernel']"),
    ("blocks.1.stride", 2, "blocks[1] (a pool) has unknown key(s) ['stride']"),
    ("blocks", DELETE, "an Arch must have the key(s) ['blocks']"),
    ("blocks.0.out", DELETE, "blocks[0] (a conv) must have the key(s) ['out']"),
    ("blocks.0.type", "dense", "blocks[0] must be an object whose type is one of ['conv', 'pool']"),
    ("blocks.0.type", DELETE, "blocks[0] must be an object whose type is one of ['conv', 'pool']"),
    ("blocks.0", 8, "blocks[0] must be an object whose type is one of ['conv', 'pool'], but got 8."),
    ("blocks", {"type": "conv"}, "blocks must be a list of conv and pool blocks"),
    ("recipe", None, "recipe must be a JSON object, but got None."),
]


@pytest.mark.parametrize("where, value, message", BAD, ids=[f"{w}={'<deleted>' if v is DELETE else repr(v)}" for w, v, _ in BAD])
def test_a_bad_arch_json_names_the_field(tmp_path, where, value, message):
    d = edited(where, value)
    with pytest.raises(BadInput) as e:
        Arch.from_dict(d)
    assert message in str(e.value) and "\n" not in str(e.value)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(d))  # NaN and Infinity as Python's json writes them: read back as floats
    with pytest.raises(BadInput, match="not an architecture JSON"):
        Arch.read(path)


def test_a_json_that_is_no_object_is_bad_input():
    with pytest.raises(BadInput, match=r"an Arch must be a JSON object, but got \[1, 2\]"):
        Arch.from_dict([1, 2])


@pytest.mark.parametrize("make", [
    lambda: Recipe(lr=True), lambda: Recipe(epochs=2.5), lambda: Conv(8, pad=-1), lambda: Pool(True),
    lambda: VALID.with_recipe(ema=1.0), lambda: replace(VALID, bn=1), lambda: replace(VALID, recipe={}),
    lambda: Arch(blocks=(Conv(8), "pool")),
])
def test_the_dataclasses_check_themselves(make):
    with pytest.raises(BadInput, match="must be"):
        make()


def test_every_valid_arch_still_loads():
    assert Arch.from_json(VALID.to_json()) == VALID
    assert Arch.from_dict({"blocks": [{"type": "conv", "out": 4}], "image_size": 8}).image_size == (8, 8)
    assert Arch.from_dict({"blocks": [{"type": "conv", "out": 4}], "recipe": {"lr": 1}}).recipe.lr == 1  # int: a number
    for b in baselines.all_baselines():
        assert Arch.from_json(b.arch.to_json()) == b.arch
    try:
        listed = subprocess.run(["git", "ls-files", "studies/*.json"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        listed = [str(p.relative_to(ROOT)) for p in ROOT.glob("studies/**/*.json")]
    archs, failed = 0, []
    for name in listed:
        d = json.loads((ROOT / name).read_text())
        if not (isinstance(d, dict) and "blocks" in d):  # a verify result, a report: not an Arch
            continue
        archs += 1
        try:
            Arch.read(ROOT / name)
        except BadInput as e:
            failed.append(str(e))
    assert not failed
    assert archs >= 100 or not listed  # the stored studies hold 133 Archs


# ----------------------------------------------------------------------------- the space fits the data
DEFAULT = SpaceConfig()


def draws(size, channels, budget, n=50, seed=0, space=DEFAULT):
    """The first `n` draws of a seeded random study fitted to the input and budget, each as the
    objective trains it (shaped to the data, as `Data.shaped` does), with its trial; or the error."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        try:
            arch = sample_arch(trial, space, image_size=size, budget=budget, in_channels=channels, classes=10)
            out.append((trial, replace(arch, image_size=size, in_channels=channels, classes=10)))
        except ShapeError as e:  # a shape the image cannot hold
            out.append((trial, e))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("budget", [3000, 7000, 20000])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(8, 8), (28, 28), (32, 32)])
def test_draws_fit_the_image_and_mostly_the_budget(size, channels, budget):
    drawn = draws(size, channels, budget)
    fit = [a for _, a in drawn if isinstance(a, Arch) and count_params(a) <= budget]
    assert len(fit) >= 45, f"{50 - len(fit)} of 50 draws do not fit"
    assert all(isinstance(a, Arch) for _, a in drawn)  # the image holds every draw
    assert max(count_params(a) for a in fit) > budget / 2  # the caps leave the budget usable
    for trial, arch in drawn:  # the labels are the space's: the trial's params are the model's
        assert params_of(arch) == trial.params


def test_without_a_budget_draws_fit_the_image():
    for _, arch in draws((8, 8), 1, None):
        assert isinstance(arch, Arch)


def test_fitted_and_plain_draws_share_one_study():
    """Optuna refuses a label whose kind or choices change within a study; sizes, budgets and the
    plain space take turns here."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for i in range(60):
        trial = study.ask()
        kw = [{}, {"image_size": (8, 8), "budget": 3000}, {"image_size": 32, "budget": 20000, "in_channels": 3},
              {"image_size": (12, 20)}][i % 4]
        try:
            sample_arch(trial, SpaceConfig(separable=(True, False)), **kw)
        except ShapeError:  # the plain space on an image too small for it
            pass
        study.tell(trial, 0.0)
    assert len(study.trials) == 60


def test_min_params_takes_the_image_size():
    space = SpaceConfig(stages=(3, 3), separable=(True,))
    assert min_params(space, image_size=(8, 8)) == min_params(space, image_size=8) > 0  # padded convs fit 8x8
    for _, arch in draws((8, 8), 1, 3000, space=space):
        assert count_params(arch) >= min_params(space, image_size=(8, 8))
    with pytest.raises(BadInput, match="no model in the space fits a 2x2px image"):
        min_params(space, image_size=2)
