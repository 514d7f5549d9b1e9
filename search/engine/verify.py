"""Final verification on the test split: retrain on all training images, test every epoch.

Used by `budgetnas verify` (exported modules and baselines alike) and `budgetnas baseline`.
The criterion is the course's: test accuracy >= target in each of the last 3 epochs, for
every seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from ... import baselines
from ...space import Arch, Recipe, build, count_params
from ...space.errors import BadInput
from .data import Data
from .results import provenance

LAST = 3  # the course's last epochs: verify needs all of them at the bar; search scores their mean, the race their worst


@dataclass(frozen=True)
class Candidate:
    name: str  # what is being verified: a baseline name or a module path
    make_model: Callable[[], torch.nn.Module]  # builds a fresh, untrained model
    recipe: Recipe  # how to train it
    params: int  # trainable parameters
    takes: tuple | None = None  # ((channels, height, width), classes) of a module or Arch JSON; None: a baseline, fitted
    arch: Arch | None = None  # a baseline's or an Arch JSON's Arch

    @classmethod
    def of(cls, arch: Arch, name: str = "arch") -> Candidate:
        """An Arch to train as it is: it takes only the images it was shaped for."""
        return cls(name, partial(build, arch), arch.recipe, count_params(arch),
                   takes=((arch.in_channels, *arch.image_size), arch.classes), arch=arch)


def load_candidate(target: str) -> Candidate:
    """A baseline by name ('exp4'), an Arch JSON file or an exported module file (Net, RECIPE, PARAMS);
    BadInput with one line if it is neither. Then `fit_to` the data."""
    path = Path(target)
    if path.suffix == ".py":
        if not path.is_file():
            raise BadInput(f"{path}: no such file.")
        # registered (dataclasses look their module up) under a name no installed module has
        name = f"_budgetnas_target_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # noqa: BLE001 -- the user's module: a syntax error, an import, an exit...
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
        return Candidate.of(Arch.read(path), str(path))
    b = baselines.get(target)
    return Candidate(b.name, partial(build, b.arch), b.arch.recipe, count_params(b.arch), arch=b.arch)


PROBED = "budgetnas: module imported"


def probe_module(path: str) -> None:
    """Import a module file in a child process first: one that ends the interpreter while it is
    imported (`os._exit`, a killed process) would end this one silently, exit 0, with no result.
    A module that raises is left to `load_candidate`, whose line names the error."""
    code = f"import runpy, sys; runpy.run_path(sys.argv[1]); print({PROBED!r})"
    try:
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300,
                             check=False)
    except subprocess.TimeoutExpired:
        raise BadInput(f"{path}: importing it did not end within 300 s.") from None
    if PROBED not in out.stdout and "Traceback" not in out.stderr:
        raise BadInput(f"{path}: importing it ended the interpreter (exit code {out.returncode}); a module to verify "
                       "defines Net, RECIPE and PARAMS and returns.")


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


def summarise(record: dict) -> dict:
    """The numbers every report quotes, from one run's record (engine/seeds.py). A diverged run
    is a result: it keeps what it trained, `diverged` says why, and it fails any bar."""
    history = record["history"]
    test = [h["test_acc"] for h in history] or [0.0]
    train_acc = [h["train_acc"] for h in history] or [0.0]
    out = {
        "seed": record["seed"],
        "params": record["params"],
        "epochs": len(history),
        "best_train": max(train_acc),
        "last_train": train_acc[-1],
        "best_test": max(test),
        "first_test": test[0],
        "last_test": test[-1],
        "last3_test": test[-LAST:],
        "min_last3": 0.0 if record.get("diverged") else min(test[-LAST:]),
        "sec_per_epoch": statistics.mean(h["seconds"] for h in history) if history else 0.0,
        **({"threads": record["threads"]} if "threads" in record else {}),  # a CPU seed's fp32 numbers depend on them
    }
    return {**out, **({"diverged": record["diverged"]} if record.get("diverged") else {}), "history": history}


def verdict(summaries: list[dict], target: float | None) -> dict:
    """PASS iff every seed's last-3 test accuracies are all >= target; no target: no verdict (passed None).
    Also the distribution: seeds passing (k of n), the mean last-3 with a 95% interval of the mean
    (Student's t over seeds), and the worst seed."""
    mins = [s["min_last3"] for s in summaries]
    means = [statistics.mean(s["last3_test"]) for s in summaries]
    worst = min(summaries, key=lambda s: s["min_last3"])
    half = T95.get(len(means) - 1, 1.96) * statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else None
    return {
        "passed": None if target is None else all(m >= target for m in mins),
        "target": target,
        "min_last3": min(mins),
        "mean_last3": statistics.mean(means),
        "passes": None if target is None else sum(m >= target for m in mins),
        "seeds": len(summaries),
        "ci95_mean_last3": None if half is None else [statistics.mean(means) - half, statistics.mean(means) + half],
        "worst_seed": worst["seed"],
    }


# two-sided 95% quantiles of Student's t by degrees of freedom (scipy is not a dependency)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def verify_record(target: str, v: dict, summaries: list[dict], dataset: str, recipe: Recipe, engine,
                  extra: dict | None = None) -> dict:
    """A verify's JSON record: the verdict and every seed, with what a later reader keys runs by
    (the dataset and the LR schedule: study/curves.py), `extra` (a drill's: its pick on validation)
    and how it was made."""
    return {"target": target, "verdict": v, "runs": summaries, "dataset": dataset, "schedule": recipe.schedule,
            **(extra or {}), **provenance(engine)}


def verdict_line(v: dict, params: int) -> str:
    word = {True: "PASS", False: "FAIL", None: "NO BAR"}[v["passed"]]
    return (
        f"{word} params={params} "
        f"min_last3={v['min_last3']:.2f}% mean_last3={v['mean_last3']:.2f}%"
    )


def distribution_line(v: dict) -> str:
    """Seeds passing, the 95% interval of the mean last-3 and the worst seed (older verify JSON: '')."""
    if "seeds" not in v:
        return ""
    ci = v.get("ci95_mean_last3")
    return (("" if v["passes"] is None else f"{v['passes']}/{v['seeds']} seeds pass; ")
            + (f"mean last-3 95% CI {ci[0]:.2f}-{ci[1]:.2f}%; " if ci else "")
            + f"worst seed {v['worst_seed']}")
