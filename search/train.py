"""The one training loop: Arch + Data -> per-epoch history. Used by baselines, search and verify.

Speed on a 2-core CPU comes from keeping every split as one uint8 tensor on the device and
doing normalisation and augmentation per batch with `affine_grid`/`grid_sample`, never per
sample in Python; with CUDA the data lives on the GPU and nothing returns to the host per
batch (losses and hits are summed on the device, read once per epoch). On top of that an
`Engine` may add bf16 autocast and torch.compile (`budgetnas bench` measures each).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from search.data import Data, Split
from space import Recipe
from space.errors import BadInput

EVAL_BATCH = 4096  # images per evaluation forward; memory is tiny for these models
COMPILE_MIN_STEPS = 1500  # torch.compile's start-up (tens of seconds on 2 cores) must be repaid


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} asked for, but CUDA is not available here.")
    return torch.device(name)


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


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


# ----------------------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, rotate: float, translate: float, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (+-`rotate` degrees) and shift (+-`translate` of the side) per image, batched.

    `x` is (N, 1, H, W) in [0, 1] so the zero fill of `grid_sample` is background.
    """
    if rotate == 0 and translate == 0:
        return x
    n = x.shape[0]
    u = torch.rand(n, 3, generator=gen, device=x.device) * 2 - 1  # U(-1, 1)
    angle = u[:, 0] * math.radians(rotate)
    shift = u[:, 1:] * 2 * translate  # affine_grid spans [-1, 1]: a fraction f of the side is 2f
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float in [0, 1]."""
    return images_u8.unsqueeze(1).float().div_(255)


# ----------------------------------------------------------------------------- optimisation
def make_optimizer(model: torch.nn.Module, r: Recipe) -> torch.optim.Optimizer:
    if r.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay)
    opt = torch.optim.Adam if r.optimizer == "adam" else torch.optim.AdamW
    return opt(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, r: Recipe, steps_per_epoch: int):
    """Stepped once per batch; all lengths are in optimizer steps."""
    total = r.epochs * steps_per_epoch
    if r.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=total)
    if r.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if r.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=r.step_every * steps_per_epoch, gamma=r.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def ema_decay(decay: float, step: int) -> float:
    """`decay` warmed up as TensorFlow's ExponentialMovingAverage does, so that early averages
    follow the model instead of holding on to its random start (and the pruner sees them)."""
    return min(decay, (1 + step) / (10 + step))


def ema_split(pairs) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """(average, current) tensor pairs, split once before training: the averages and currents of
    the floats (weights, BatchNorm statistics) and the integer pairs (step counters)."""
    pairs = list(pairs)
    floats = [(avg, cur) for avg, cur in pairs if avg.is_floating_point()]
    return [a for a, _ in floats], [c for _, c in floats], [(a, c) for a, c in pairs if not a.is_floating_point()]


@torch.no_grad()
def ema_update(avgs: list[torch.Tensor], curs: list[torch.Tensor], counters: list[tuple[torch.Tensor, torch.Tensor]],
               decay: float) -> None:
    """average <- decay * average + (1 - decay) * current for the floats, in one call as torch's
    EMA does; counters are copied. Not torch's AveragedModel: it reads its step count on the host
    every step (a CUDA sync per batch)."""
    torch._foreach_lerp_(avgs, curs, 1 - decay)
    for avg, cur in counters:
        avg.copy_(cur)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, mean: float, std: float, device: torch.device) -> float:
    """Accuracy in percent on a whole split, in fp32 always: bf16 may train the model, but what
    is measured is the fp32 model that an exported module holds."""
    model.eval()
    hits = torch.zeros((), device=device, dtype=torch.long)
    for i in range(0, len(split), EVAL_BATCH):
        x = (to_unit(split.images[i : i + EVAL_BATCH]) - mean) / std
        hits += (model(x).argmax(1) == split.labels[i : i + EVAL_BATCH]).sum()
    return 100.0 * hits.item() / len(split)


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
    """Train the model `make_model()` builds by `recipe`; return one record per epoch.

    The model is built after seeding, so `seed` fixes initialisation, order and augmentation.
    Each record: epoch, train_loss, train_acc, val_acc (if data.val), test_acc (if
    eval_test), lr (at the epoch's end), seconds; with `recipe.ema` the accuracies on val and
    test are the weight average's. `on_epoch(record)` runs after every
    epoch and may raise (e.g. optuna.TrialPruned) to stop early. `progress=None` shows a
    bar only on a terminal. Raises `Diverged` on a NaN/inf loss.
    """
    r = recipe
    steps = math.ceil(len(data.train) / r.batch_size)
    device, bf16, compiled = engine.resolve(steps * r.epochs)
    if device.type == "cuda":  # fp32 means fp32: no TF32 rounding in convolutions (cuDNN's default)
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    model = make_model().to(device)
    scored = copy.deepcopy(model) if r.ema else model  # with ema, the weight average is what is measured
    ema = ema_split(zip(scored.state_dict().values(), model.state_dict().values())) if r.ema else None  # views
    train_x, train_y = data.train.images.to(device), data.train.labels.to(device)
    splits = {"val": data.val, "test": data.test if eval_test else None}
    splits = {k: Split(s.images.to(device), s.labels.to(device)) for k, s in splits.items() if s is not None}

    if compiled:
        torch._dynamo.reset()  # one worker trains many models; start each with an empty cache
    fast = torch.compile(model) if compiled else model  # same parameters; eager for the odd last batch
    opt = make_optimizer(model, r)
    sched = make_schedule(opt, r, steps)
    history = []
    for epoch in range(1, r.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device, dtype=torch.long)
        order = torch.randperm(len(train_y), generator=gen, device=device)
        for i in tqdm(range(steps), desc=f"epoch {epoch}/{r.epochs}", disable=None if progress is None else not progress, leave=False):
            idx = order[i * r.batch_size : (i + 1) * r.batch_size]
            x = augment(to_unit(train_x[idx]), r.rotate, r.translate, gen)
            y = train_y[idx]
            with autocast(device, bf16):
                out = (fast if len(idx) == r.batch_size else model)((x - data.mean) / data.std)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if r.ema:
                ema_update(*ema, ema_decay(r.ema, (epoch - 1) * steps + i))
            loss_sum += loss.detach() * len(y)
            hits += (out.argmax(1) == y).sum()
        train_loss = loss_sum.item() / len(train_y)
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss became {train_loss} in epoch {epoch} (lr {r.lr}, {r.optimizer})")
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": 100.0 * hits.item() / len(train_y)}
        for name, split in splits.items():
            record[f"{name}_acc"] = evaluate(scored, split, data.mean, data.std, device)
        record["lr"] = opt.param_groups[0]["lr"]
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
