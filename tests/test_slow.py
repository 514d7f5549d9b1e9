"""Real MNIST (from $BUDGETNAS_DATA or ./data): `make test-slow`. Minutes, not seconds."""

import os
from functools import partial

import pytest

from budgetnas import baselines
from budgetnas.search.engine.data import load
from budgetnas.search.engine.train import Engine, train
from budgetnas.space import build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist():
    root = os.environ.get("BUDGETNAS_DATA_REAL") or os.environ.get("BUDGETNAS_DATA")
    if root is None and not os.path.exists("data/MNIST/raw"):
        pytest.skip("no MNIST: set BUDGETNAS_DATA to a folder holding MNIST/raw")
    return load("mnist", root, val_size=5000)


@pytest.fixture(autouse=True)
def _isolate():  # overrides the suite's: these tests need the real data root
    yield


def test_mnist_shapes_and_split(mnist):
    assert mnist.train.images.shape == (55000, 28, 28) and len(mnist.val) == 5000 and len(mnist.test) == 10000
    assert abs(mnist.mean - 0.1307) < 0.001 and abs(mnist.std - 0.3081) < 0.001


def test_exp4_learns_mnist_in_two_epochs(mnist):
    arch = baselines.get("exp4").arch.with_recipe(epochs=2)
    history = train(partial(build, arch), arch.recipe, mnist, eval_test=True, engine=Engine("cpu"), progress=False)
    assert history[-1]["val_acc"] > 98.0 and history[-1]["test_acc"] > 98.0
