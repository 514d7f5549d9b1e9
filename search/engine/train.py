"""Training as budgetnas runs it: a Recipe and Data through the one loop (search/engine/loop.py), on an
`Engine` that may add bf16 autocast and torch.compile (`budgetnas bench` measures each). Used
by baselines, search, the drill and verify.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

from ...space import Recipe
from ...space.errors import BadInput
from .data import Data
from .loop import fit

COMPILE_MIN_STEPS = 1500  # torch.compile's start-up (tens of seconds on 2 cores) must be repaid


DEVICES = ("auto", "cpu", "cuda")  # and cuda:N


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} asked for, but CUDA is not available here.")
    return torch.device(name)


def check_device(name: str) -> str:
    index = name.removeprefix("cuda:")
    if name not in DEVICES and not (name.startswith("cuda:") and index.isdigit()):
        raise BadInput(f"device must be one of {', '.join(DEVICES)} or cuda:N, but got {name!r}.")
    return name


def threads_each(processes: int, cores: int | None = None) -> int:
    """Torch threads for each of `processes` processes sharing `cores` (default: this machine's)."""
    return max(1, (cores or os.cpu_count() or 1) // processes)


def bf16_pays(device: torch.device) -> bool:
    """Does bf16 autocast make training faster here? On a CPU with native bf16 (AVX-512 BF16 /
    AMX through oneDNN), yes. On CUDA, no: these small models are launch-bound there and bf16
    only adds cast kernels (`budgetnas bench --device cuda`: 0.64x of fp32 for exp4 on an H100)."""
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def compile_pays(device: torch.device) -> bool:
    """Can torch.compile make long runs faster here? On a CPU with a C++ compiler, yes. On CUDA,
    no: eager exp4 trains faster than compiled on an H100 (`budgetnas bench --device cuda`)."""
    return device.type == "cpu" and bool(shutil.which("c++") or shutil.which("g++"))


@dataclass(frozen=True)
class Engine:
    """How a training runs, not what it trains: device, arithmetic and compilation.

    `precision="bf16"` runs convolutions and matmuls under bf16 autocast (weights, BN
    statistics and the loss stay fp32); it changes rounding, so its accuracy parity with
    fp32 is measured (README, Performance). `"auto"` means bf16 where it pays (`bf16_pays`).
    `compile="auto"` compiles runs of at least COMPILE_MIN_STEPS optimizer steps where that
    pays (`compile_pays`).
    """

    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    compile: str = "auto"  # auto | on | off

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        check_device(self.device)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise BadInput(f"precision must be auto, fp32 or bf16, but got {self.precision!r}.")
        if self.compile not in ("auto", "on", "off"):
            raise BadInput(f"compile must be auto, on or off, but got {self.compile!r}.")

    def pinned(self) -> Engine:
        """The same engine with `precision="auto"` decided for this machine (for the record)."""
        if self.precision != "auto":
            return self
        return replace(self, precision="bf16" if bf16_pays(resolve_device(self.device)) else "fp32")

    def resolve(self, steps: int) -> tuple[torch.device, bool, bool]:
        """(device, bf16?, compile?) for a run of `steps` optimizer steps."""
        device = resolve_device(self.device)
        bf16 = self.precision == "bf16" or (self.precision == "auto" and bf16_pays(device))
        compiled = self.compile == "on" or (self.compile == "auto" and steps >= COMPILE_MIN_STEPS and compile_pays(device))
        return device, bf16, compiled


# ----------------------------------------------------------------------------- the loop
def train(
    make_model: Callable[[], torch.nn.Module],
    recipe: Recipe,
    data: Data,
    seed: int = 0,
    engine: Engine = Engine(),
    eval_test: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Train the model `make_model()` builds by `recipe`; return one record per epoch (see
    `loop.fit`: train_loss, train_acc, val_acc if data.val, test_acc if eval_test, lr, seconds).

    `on_epoch(record)` may raise (e.g. optuna.TrialPruned) to stop early; `progress=None` shows
    a bar only on a terminal. Raises `Diverged` on a NaN/inf loss.
    """
    steps = math.ceil(len(data.train) / recipe.batch_size)
    device, bf16, compiled = engine.resolve(steps * recipe.epochs)
    evals = {"val": data.val, "test": data.test if eval_test else None}

    def batches(n: int, epoch: int):
        return tqdm(range(n), desc=f"epoch {epoch}/{recipe.epochs}", leave=False,
                    disable=None if progress is None else not progress)

    return fit(make_model, asdict(recipe), (data.train.images, data.train.labels),
               {k: (s.images, s.labels) for k, s in evals.items() if s is not None}, data.mean, data.std,
               seed=seed, device=device, bf16=bf16, compiled=compiled, on_epoch=on_epoch, batches=batches)
