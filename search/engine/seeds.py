"""The one seed-training executor: confirm, the race, the drill's verify, `budgetnas verify` and
`budgetnas baseline` all retrain a model on seeds through `train_seeds`.

A `SeedRun` is one training of one model on one seed, described by value (a file, a baseline
name or Arch JSON, and the data as a `DataSpec`), so that a worker process loads model and
data itself: neither pickles cheaply, and a process pool is the only way to use several cores
with one torch thread each (`budgetnas bench --workers`). Each run comes back as a record
(seed, params, per-epoch history, seconds, or why it diverged); callers score the records.
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

import torch

from ...space import Arch
from .data import Data, load
from .loop import Diverged
from .train import Engine, threads_each, train
from .verify import Candidate, fit_to, load_candidate


@dataclass(frozen=True)
class DataSpec:
    """Which images a run trains and evaluates on, by value (engine/data.py `load`'s arguments)."""

    dataset: str = "mnist"  # a named dataset or a path
    data_dir: str | None = None  # data root; None: $BUDGETNAS_DATA, else ./data
    val_size: int | None = 0  # validation images held out (None: the default share); 0: train on all, test every epoch
    val_split: str = "random"  # random | tail
    subset: int | None = None  # the first N training images only

    @property
    def test(self) -> bool:
        """A run with no validation split is a verification: it reads the test split (and only then)."""
        return self.val_size == 0

    def load(self) -> Data:
        return _load(self)


@functools.lru_cache(maxsize=2)
def _load(spec: DataSpec) -> Data:  # one read a process: a pool worker trains many runs on the same data
    return load(spec.dataset, spec.data_dir, val_size=spec.val_size, subset=spec.subset, val_split=spec.val_split,
                test=spec.test)


@dataclass(frozen=True)
class SeedRun:
    """One training: `target` (an exported module, an Arch JSON file or a baseline name) or `arch`
    (an Arch as JSON text), on `data`, with `seed`."""

    data: DataSpec
    seed: int
    target: str | None = None
    arch: str | None = None
    epochs: int | None = None  # None: the recipe's
    tag: object = None  # the caller's label, returned in the record (e.g. a trial number)

    def __post_init__(self):
        if (self.target is None) == (self.arch is None):
            raise ValueError(f"a SeedRun trains a target or an arch, one of them, but got {self.target!r}, {self.arch!r}.")

    def candidate(self, data: Data) -> Candidate:
        # read afresh each run (not cached by name): the file behind a path may have been rewritten
        cand = load_candidate(self.target) if self.target is not None else Candidate.of(Arch.from_json(self.arch))
        return fit_to(cand, data)


def train_one(run: SeedRun, engine: Engine, log: Callable[[str], None] | None = None) -> dict:
    """The record of one run: {tag, seed, params, history, seconds, diverged}. A run whose loss
    diverges is a result, not an error: `diverged` holds why, `history` the epochs before it."""
    data = run.data.load()
    cand = run.candidate(data)
    recipe = cand.recipe if run.epochs is None else replace(cand.recipe, epochs=run.epochs)
    history: list[dict] = []

    def keep(r: dict) -> None:
        history.append(r)
        if log:
            acc = f"test {r['test_acc']:.2f}%" if "test_acc" in r else f"val {r['val_acc']:.2f}%"
            log(f"  seed {run.seed} epoch {r['epoch']:2d}  loss {r['train_loss']:.4f}  train {r['train_acc']:.2f}%  "
                f"{acc}  lr {r['lr']:.4g}  {r['seconds']:.1f}s")

    t0, diverged = time.perf_counter(), None
    try:
        train(cand.make_model, recipe, data, seed=run.seed, engine=engine, eval_test=run.data.test, on_epoch=keep,
              progress=False)
    except Diverged as e:
        diverged = str(e) or "the training loss became NaN or infinite"
    return {"tag": run.tag, "seed": run.seed, "params": cand.params, "epochs": recipe.epochs, "history": history,
            "seconds": time.perf_counter() - t0, "diverged": diverged, "threads": torch.get_num_threads()}


def train_seeds(runs: list[SeedRun], engine: Engine, jobs: int = 1, log: Callable[[str], None] | None = None
                ) -> Iterator[dict]:
    """Train `runs`, `jobs` at a time (processes with an equal share of the cores; 1: here, in
    order), and yield each record as it ends, so that a caller can store it at once: a killed
    caller loses only the trainings under way."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, but got {jobs}.")
    jobs = min(jobs, len(runs))
    if jobs <= 1:
        for run in runs:
            yield train_one(run, engine, log)
        return
    threads = threads_each(jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker,
                               initargs=(threads, log is not None))
    try:
        futures = [pool.submit(_train_in_worker, run, engine) for run in runs]
        for f in as_completed(futures):
            yield f.result()
    finally:
        pool.shutdown(cancel_futures=True)


_LOG = False


def _worker(threads: int, log: bool) -> None:
    global _LOG
    die_with_parent()
    torch.set_num_threads(threads)
    _LOG = log


def _train_in_worker(run: SeedRun, engine: Engine) -> dict:
    return train_one(run, engine, (lambda line: print(line, flush=True)) if _LOG else None)


def die_with_parent() -> None:
    """On Linux, SIGTERM this worker when its parent dies, even by `kill -9`: a resumed run must
    not share its study or files with orphans of the killed one. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
