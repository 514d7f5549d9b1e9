"""Final verification on the test split: retrain on all training images, test every epoch.

Used by `budgetnas verify` (exported modules and baselines alike) and `budgetnas baseline`.
The criterion is the course's: test accuracy >= target in each of the last 3 epochs, for
every seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from budgetnas import baselines
from budgetnas.search.data import Data, load
from budgetnas.search.train import Engine, threads_each, train
from budgetnas.space import Arch, Recipe, build, count_params
from budgetnas.space.errors import BadInput

LAST = 3  # the course's last epochs: verify needs all of them at the bar; search scores their mean, the race their worst


@dataclass(frozen=True)
class Candidate:
    name: str  # what is being verified: a baseline name or a module path
    make_model: Callable[[], torch.nn.Module]  # builds a fresh, untrained model
    recipe: Recipe  # how to train it
    params: int  # trainable parameters
    takes: tuple | None = None  # ((channels, height, width), classes) of a module or Arch JSON; None: a baseline, fitted
    arch: Arch | None = None  # a baseline's or an Arch JSON's Arch


def load_candidate(target: str) -> Candidate:
    """A baseline by name ('exp4'), an Arch JSON file or an exported module file (Net, RECIPE, PARAMS);
    BadInput with one line if it is neither. Then `fit_to` the data."""
    path = Path(target)
    if path.suffix == ".py" and not baselines.old_spelling(target):
        if not path.is_file():
            raise BadInput(f"{path}: no such file.")
        # registered (dataclasses look their module up) under a name no installed module has
        name = f"_budgetnas_target_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 -- the user's module: a syntax error, a failing import...
            sys.modules.pop(name, None)
            raise BadInput(f"{path}: cannot import it ({type(e).__name__}: {e}).") from None
        for attr in ("Net", "RECIPE", "PARAMS"):
            if not hasattr(module, attr):
                raise BadInput(f"{path} has no {attr}; is it a module written by `budgetnas export`?")
        counted = sum(p.numel() for p in module.Net().parameters() if p.requires_grad)
        if counted != module.PARAMS:
            raise BadInput(f"{path} says PARAMS = {module.PARAMS}, but its Net has {counted} trainable parameters.")
        takes = (tuple(getattr(module, "INPUT", (1, 28, 28))), getattr(module, "CLASSES", 10))  # older modules: MNIST's
        return Candidate(str(path), module.Net, Recipe(**module.RECIPE), counted, takes=takes)
    if path.suffix == ".json":  # an Arch, as `budgetnas export -o FILE.json` or a drill writes it
        arch = Arch.read(path)
        return Candidate(str(path), partial(build, arch), arch.recipe, count_params(arch),
                         takes=((arch.in_channels, *arch.image_size), arch.classes), arch=arch)
    b = baselines.get(target)
    return Candidate(b.name, partial(build, b.arch), b.arch.recipe, count_params(b.arch), arch=b.arch)


def fit_to(cand: Candidate, data: Data) -> Candidate:
    """`cand` for `data`: a module or an Arch JSON must take its images (BadInput if not); a
    baseline gets the data's input channels, image size and head, or is refused with a line if its
    layers cannot take the image."""
    if cand.takes is not None:
        if cand.takes != ((data.channels, *data.image_size), data.classes):
            raise BadInput(f"{cand.name} takes images {cand.takes[0]} (channels, height, width) with {cand.takes[1]} "
                           f"classes, but the data has {(data.channels, *data.image_size)} with {data.classes}.")
        return cand
    try:
        arch = data.shaped(cand.arch)
    except BadInput as e:
        raise BadInput(f"baseline {cand.name} does not fit this data ({e}); it is left out.") from None
    return replace(cand, make_model=partial(build, arch), params=count_params(arch), arch=arch)


def summarise(history: list[dict], params: int) -> dict:
    """The numbers every report quotes, computed from one run's per-epoch history."""
    test = [h["test_acc"] for h in history]
    train_acc = [h["train_acc"] for h in history]
    return {
        "params": params,
        "epochs": len(history),
        "best_train": max(train_acc),
        "last_train": train_acc[-1],
        "best_test": max(test),
        "first_test": test[0],
        "last_test": test[-1],
        "last3_test": test[-LAST:],
        "min_last3": min(test[-LAST:]),
        "sec_per_epoch": statistics.mean(h["seconds"] for h in history),
    }


def verdict(summaries: list[dict], target: float | None) -> dict:
    """PASS iff every seed's last-3 test accuracies are all >= target; no target: no verdict (passed None)."""
    mins = [s["min_last3"] for s in summaries]
    means = [statistics.mean(s["last3_test"]) for s in summaries]
    return {
        "passed": None if target is None else all(m >= target for m in mins),
        "target": target,
        "min_last3": min(mins),
        "mean_last3": statistics.mean(means),
    }


def verdict_line(v: dict, params: int) -> str:
    word = {True: "PASS", False: "FAIL", None: "NO BAR"}[v["passed"]]
    return (
        f"{word} params={params} "
        f"min_last3={v['min_last3']:.2f}% mean_last3={v['mean_last3']:.2f}%"
    )


def run_seed(cand: Candidate, data: Data, seed: int, epochs: int | None, engine: Engine, log=print) -> list[dict]:
    """One full training on `data.train` (train + validation), test accuracy every epoch."""
    recipe = cand.recipe if epochs is None else replace(cand.recipe, epochs=epochs)

    def show(r):
        log(
            f"  seed {seed} epoch {r['epoch']:2d}  loss {r['train_loss']:.4f}  train {r['train_acc']:.2f}%  "
            f"test {r['test_acc']:.2f}%  lr {r['lr']:.4g}  {r['seconds']:.1f}s"
        )

    return train(cand.make_model, recipe, data, seed=seed, engine=engine, eval_test=True, on_epoch=show)


def _one_seed(source: tuple[str, str, object], seed: int, epochs: int | None, engine: Engine, threads: int) -> dict:
    """In a worker process: load the candidate and the data there (neither pickles cheaply), train one seed."""
    target, dataset, data_dir = source
    torch.set_num_threads(threads)
    data = load(dataset, data_dir, val_size=0)
    cand = fit_to(load_candidate(target), data)
    return summarise_run(cand, data, seed, epochs, engine)


def summarise_run(cand: Candidate, data: Data, seed: int, epochs: int | None, engine: Engine) -> dict:
    history = run_seed(cand, data, seed, epochs, engine, log=lambda line: print(line, flush=True))
    return {"seed": seed, **summarise(history, cand.params), "history": history}


def run_seeds(cand: Candidate, data: Data, seeds, epochs: int | None, engine: Engine, jobs: int,
              source: tuple[str, str, object]) -> list[dict]:
    """Per-seed summaries (with histories). `jobs` > 1 trains seeds in parallel processes, which
    reload the candidate and data from `source` = (target, dataset, data_dir)."""
    if jobs < 1:
        raise BadInput(f"jobs must be >= 1, but got {jobs}.")
    if jobs == 1:
        return [summarise_run(cand, data, seed, epochs, engine) for seed in seeds]
    threads = threads_each(jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_one_seed, *zip(*[(source, seed, epochs, engine, threads) for seed in seeds], strict=True)))
