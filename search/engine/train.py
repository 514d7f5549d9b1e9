"""Training as budgetnas runs it: a Recipe and Data through the one loop (search/engine/loop.py), on an
`Engine` that may add bf16 autocast and torch.compile (`budgetnas bench` measures each). Used
by baselines, search, the drill and verify.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

from ...space import Recipe
from ...space.errors import BadInput
from .data import Data
from .loop import fit
from .masks import with_fast_masks

DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
SWITCH = ("auto", "on", "off")
CHOICES = {"precision": ("auto", "fp32", "bf16"), "compile": SWITCH, "channels_last": SWITCH,
           "masks": ("auto", "fast", "torch")}  # each Engine field's domain, its flag's choices too


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


def channels_last_pays(device: torch.device) -> bool:
    """Does the channels-last (NHWC) layout make training faster here? On a CPU, yes: oneDNN's
    convolutions work in it, so NCHW pays a reorder around each one (docs/performance.md: with
    bf16, 1.2-2x the trainings an hour of bf16 + compile on the drill's models, a worker a core).
    On CUDA: not measured, so no."""
    return device.type == "cpu"


def fast_masks_pay(device: torch.device) -> bool:
    """Do `FastDropout`'s masks make training faster here? On a CPU, yes: torch's `bernoulli_` drew a
    quarter of the headline's step (engine/masks.py). On CUDA: not measured, so no."""
    return device.type == "cpu"


# Verify and baseline train as the exported module's own train() does, so that it reproduces them.
VERIFY_ENGINE = {"precision": "fp32", "compile": "off", "channels_last": "off", "masks": "torch"}


@dataclass(frozen=True)
class Engine:
    """How a training runs, not what it trains: device, arithmetic, compilation and layout.

    `precision="bf16"` runs convolutions and matmuls under bf16 autocast (weights, BN
    statistics and the loss stay fp32); it changes rounding, so its accuracy parity with
    fp32 is measured (docs/performance.md). `"auto"` means bf16 where it pays (`bf16_pays`).
    `channels_last="auto"` means NHWC where it pays (`channels_last_pays`); it changes which
    kernels run, so rounding too. `compile="auto"` means off: at one thread a worker, as search
    and the drill train on a CPU, torch.compile was no faster than eager channels last on any
    model measured, and on CUDA no faster than eager (docs/performance.md). `masks="auto"` means
    dropout masks cut from 64-bit draws (engine/masks.py) where they pay (`fast_masks_pay`), torch's
    `nn.Dropout` elsewhere; other random numbers, so a trajectory of its own too.
    """

    device: str = "auto"
    precision: str = "auto"  # domains: CHOICES
    compile: str = "auto"
    channels_last: str = "auto"
    masks: str = "auto"  # how dropout draws its masks

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        check_device(self.device)
        for name, domain in CHOICES.items():
            if getattr(self, name) not in domain:
                raise BadInput(f"{name} must be {', '.join(domain[:-1])} or {domain[-1]}, but got {getattr(self, name)!r}.")

    def pinned(self, device: torch.device | None = None) -> Engine:
        """The same engine with its autos decided for its device here, or for `device` (for the record)."""
        _, bf16, compiled, channels_last, fast = self.resolve(device)
        on = {True: "on", False: "off"}
        return replace(self, precision="bf16" if bf16 else "fp32", compile=on[compiled], channels_last=on[channels_last],
                       masks="fast" if fast else "torch")

    def resolve(self, device: torch.device | None = None) -> tuple[torch.device, bool, bool, bool, bool]:
        """(device, bf16?, compile?, channels last?, fast masks?), on its device or on `device`."""
        device = device or resolve_device(self.device)
        bf16 = self.precision == "bf16" or (self.precision == "auto" and bf16_pays(device))
        channels_last = self.channels_last == "on" or (self.channels_last == "auto" and channels_last_pays(device))
        fast = self.masks == "fast" or (self.masks == "auto" and fast_masks_pay(device))
        return device, bf16, self.compile == "on", channels_last, fast


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
    device, bf16, compiled, channels_last, fast = engine.resolve()
    make = (lambda: with_fast_masks(make_model())) if fast else make_model
    evals = {"val": data.val, "test": data.test if eval_test else None}

    def batches(n: int, epoch: int):
        return tqdm(range(n), desc=f"epoch {epoch}/{recipe.epochs}", leave=False,
                    disable=None if progress is None else not progress)

    return fit(make, asdict(recipe), (data.train.images, data.train.labels),
               {k: (s.images, s.labels) for k, s in evals.items() if s is not None}, data.mean, data.std,
               seed=seed, device=device, bf16=bf16, compiled=compiled, channels_last=channels_last,
               on_epoch=on_epoch, batches=batches)
