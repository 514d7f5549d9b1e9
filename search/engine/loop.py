"""The one training loop, torch only: every budgetnas training runs `fit`, and every exported
module carries this file verbatim (search/engine/render.py), so `python best.py --seed S` is the run
that `budgetnas verify best.py` reports for seed S.

Speed on a 2-core CPU comes from keeping every split as one uint8 tensor on the device and
doing normalisation and augmentation per batch with `affine_grid`/`grid_sample`, never per
sample in Python; with CUDA nothing returns to the host per batch (losses and hits are summed
on the device, read once per epoch). The caller may add bf16 autocast, torch.compile and the
channels-last layout.
"""

import copy
import math
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

EVAL_BATCH = 256  # images per evaluation forward: 4096 ran at half the speed on CPU (`budgetnas bench --profile`)


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def to_unit(images_u8):
    """(N, C, H, W) uint8 -> float in [0, 1]."""
    return images_u8.float().div_(255)


def channel_stats(images_u8):
    """Per-channel pixel mean and std of (N, C, H, W) uint8 images, in [0, 1], as (C, 1, 1) tensors
    (a constant channel gets the std of one grey level, not a division by zero)."""
    c = images_u8.shape[1]
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images_u8), EVAL_BATCH):  # in chunks: exact sums of integers, little memory
        x = images_u8[i : i + EVAL_BATCH].transpose(0, 1).reshape(c, -1).double()
        total, squares = total + x.sum(1), squares + (x * x).sum(1)
    n = images_u8.numel() // c
    mean = total / n
    var = (squares / n - mean * mean) * n / max(1, n - 1)
    return (mean / 255).float().view(-1, 1, 1), (var.clamp(min=1.0).sqrt() / 255).float().view(-1, 1, 1)


def augment(x, rotate, translate, gen):
    """Random rotation (+-`rotate` degrees) and shift (+-`translate` of each side) per image, batched.

    `x` is (N, C, H, W) in [0, 1], so the zero fill of `grid_sample` is background."""
    if rotate == 0 and translate == 0:
        return x
    u = torch.rand(x.shape[0], 3, generator=gen, device=x.device) * 2 - 1  # U(-1, 1)
    angle = u[:, 0] * math.radians(rotate)
    shift = u[:, 1:] * 2 * translate  # affine_grid spans [-1, 1]: a fraction f of the side is 2f
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def make_optimizer(model, r):
    """`r` is a recipe as a dict (budgetnas's Recipe fields, an exported module's RECIPE)."""
    if r["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, nesterov=True,
                               weight_decay=r["weight_decay"])
    opt = torch.optim.Adam if r["optimizer"] == "adam" else torch.optim.AdamW
    return opt(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])


def make_schedule(opt, r, steps_per_epoch):
    """Stepped once per batch; all lengths are in optimizer steps."""
    total = r["epochs"] * steps_per_epoch
    if r["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=total)
    if r["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if r["schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=r["step_every"] * steps_per_epoch, gamma=r["step_gamma"])
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def ema_decay(decay, step):
    """`decay` warmed up as TensorFlow's ExponentialMovingAverage does, so that early averages
    follow the model instead of holding on to its random start (and a pruner sees them)."""
    return min(decay, (1 + step) / (10 + step))


def ema_split(pairs):
    """(average, current) tensor pairs, split once before training: the averages and currents of
    the floats (weights, BatchNorm statistics) and the integer pairs (step counters)."""
    pairs = list(pairs)
    floats = [(avg, cur) for avg, cur in pairs if avg.is_floating_point()]
    return [a for a, _ in floats], [c for _, c in floats], [(a, c) for a, c in pairs if not a.is_floating_point()]


@torch.no_grad()
def ema_update(avgs, curs, counters, decay):
    """average <- decay * average + (1 - decay) * current for the floats, in one call as torch's
    EMA does; counters are copied. Not torch's AveragedModel: it reads its step count on the host
    every step (a CUDA sync per batch)."""
    torch._foreach_lerp_(avgs, curs, 1 - decay)
    for avg, cur in counters:
        avg.copy_(cur)


@torch.inference_mode()
def evaluate(model, images, labels, mean, std, memory_format=torch.contiguous_format, batch=EVAL_BATCH):
    """Accuracy in percent on a whole split, in fp32 always: bf16 may train the model, but what
    is measured is the fp32 model that an exported module holds. `memory_format`: the model's."""
    model.eval()
    hits = torch.zeros((), device=labels.device, dtype=torch.long)
    for i in range(0, len(labels), batch):
        x = ((to_unit(images[i : i + batch]) - mean) / std).contiguous(memory_format=memory_format)
        hits += (model(x).argmax(1) == labels[i : i + batch]).sum()
    return 100.0 * hits.item() / len(labels)


def fit(make_model, recipe, train, evals, mean, std, seed=0, device="cpu", bf16=False, compiled=False,
        channels_last=False, on_epoch=None, batches=None):
    """Train the model `make_model()` builds by `recipe` (a dict) on `train` = (images, labels);
    return one record per epoch.

    The model is built after seeding, so `seed` fixes initialisation, order and augmentation;
    `channels_last` then stores its weights and batches as NHWC (same numbers, other kernels).
    Each record: epoch, train_loss, train_acc, NAME_acc for every (images, labels) in `evals`,
    lr (at the epoch's end), seconds; with `recipe["ema"]` the accuracies of `evals` are the
    weight average's. `on_epoch(record)` runs after every epoch and may raise to stop early;
    `batches(steps, epoch)` wraps the batch range (a progress bar). Raises `Diverged` on a
    NaN/inf loss.
    """
    r, device = recipe, torch.device(device)
    train_x, train_y = train[0].to(device), train[1].to(device)
    evals = {name: (x.to(device), y.to(device)) for name, (x, y) in evals.items()}
    mean, std = mean.to(device), std.to(device)
    steps = math.ceil(len(train_y) / r["batch_size"])
    if device.type == "cuda":  # fp32 means fp32: no TF32 rounding in convolutions (cuDNN's default)
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format  # NHWC: oneDNN's own layout
    model = make_model().to(device, memory_format=fmt)  # after init: same weights either way
    scored = copy.deepcopy(model) if r["ema"] else model  # with ema, the weight average is what is measured
    ema = ema_split(zip(scored.state_dict().values(), model.state_dict().values())) if r["ema"] else None  # views
    if compiled:
        torch._dynamo.reset()  # one worker trains many models; start each with an empty cache
    fast = torch.compile(model) if compiled else model  # same parameters; eager for the odd last batch
    opt = make_optimizer(model, r)
    sched = make_schedule(opt, r, steps)
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    history = []
    for epoch in range(1, r["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device, dtype=torch.long)
        order = torch.randperm(len(train_y), generator=gen, device=device)
        for i in batches(steps, epoch) if batches else range(steps):
            idx = order[i * r["batch_size"] : (i + 1) * r["batch_size"]]
            x = augment(to_unit(train_x[idx]), r["rotate"], r["translate"], gen)
            y = train_y[idx]
            with cast:
                out = (fast if len(idx) == r["batch_size"] else model)(((x - mean) / std).contiguous(memory_format=fmt))
            loss = F.cross_entropy(out.float(), y, label_smoothing=r["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if r["ema"]:
                ema_update(*ema, ema_decay(r["ema"], (epoch - 1) * steps + i))
            loss_sum += loss.detach() * len(y)
            hits += (out.argmax(1) == y).sum()
        train_loss = loss_sum.item() / len(train_y)
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss became {train_loss} in epoch {epoch} (lr {r['lr']}, {r['optimizer']})")
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": 100.0 * hits.item() / len(train_y)}
        for name, (x, y) in evals.items():
            record[f"{name}_acc"] = evaluate(scored, x, y, mean, std, fmt)
        record["lr"] = opt.param_groups[0]["lr"]
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
