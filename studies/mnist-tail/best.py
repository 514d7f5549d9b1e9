"""A 6,960-parameter CNN for 28x28 images with 1 channel, 10 classes, exported by budgetnas.

Study: mnist-tail, trial 41
Budget: 7500 params; this model has 6960
Validation accuracy: 99.48% (mean of the last 3 of 15 epochs, 10000 held-out training images of mnist, the last ones of the training file)
Exported: 2026-11-26 by `budgetnas export`
Rendered again: 2026-12-03 from best.json with the one loop (search/loop.py) and verified with it (verify.json); rendered once more the same day for the reader's label numbering, which leaves MNIST's labels 0..9 as they are

Standalone: needs only torch (and NumPy to read a .npz, Pillow an image folder). Retrains on
all training images by RECIPE and tests after every epoch, with the loop `budgetnas verify`
runs, so seed S here gives the per-epoch numbers verify reported for seed S, on the same CPU
with the torch threads it trained with (fp32 sums split by thread; verify.json keeps each seed's):
    python this_file.py --data PATH --seed 0 --threads 1
PATH is the data: a folder of IDX files (MNIST's raw/ folder), a .npz with x_train, y_train,
x_test, y_test, or an image folder with train/<class>/ and test/<class>/.
"""

import argparse
import copy
import gzip
import json
import math
import time
import zipfile
import zlib
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PARAMS = 6960  # trainable parameters
INPUT = (1, 28, 28)  # (channels, height, width) of the images it takes
CLASSES = 10

RECIPE = {
    "optimizer": "sgd",  # sgd (Nesterov, momentum 0.9) | adam | adamw
    "lr": 0.10817756161458601,  # peak learning rate
    "weight_decay": 0.0,  # L2 (sgd/adam) or decoupled (adamw) decay
    "schedule": "onecycle",  # none | step | onecycle | cosine
    "step_every": 5,  # step schedule: epochs between decays
    "step_gamma": 0.1,  # step schedule: multiplicative decay
    "epochs": 15,  # training epochs
    "batch_size": 128,  # images per optimizer step
    "rotate": 7.5,  # augmentation: max random rotation, degrees (uniform +-)
    "translate": 0.025,  # augmentation: max random shift, fraction of image side
    "ema": 0.998,  # decay per step of a moving average of the weights; 0: off, else the average is the model
    "label_smoothing": 0.0,  # loss: this share of each label's weight spread over all classes; 0: off
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # 3x3 conv: 1 -> 8 channels, 28x28px -> 26x26px
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=0, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        # 3x3 conv: 8 -> 10 channels, 26x26px -> 26x26px
        self.conv2 = nn.Sequential(
            nn.Conv2d(8, 10, 3, padding=1, bias=False),
            nn.BatchNorm2d(10),
            nn.ReLU(),
        )
        # 3x3 conv: 10 -> 6 channels, 26x26px -> 26x26px
        self.conv3 = nn.Sequential(
            nn.Conv2d(10, 6, 3, padding=1, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
        )
        # max-pool: 26x26px -> 13x13px
        self.pool1 = nn.MaxPool2d(2)
        # 1x1 transition: 6 -> 10 channels, 13x13px -> 13x13px
        self.conv4 = nn.Sequential(
            nn.Conv2d(6, 10, 1, padding=0, bias=False),
            nn.BatchNorm2d(10),
            nn.ReLU(),
        )
        # 3x3 conv: 10 -> 14 channels, 13x13px -> 11x11px
        self.conv5 = nn.Sequential(
            nn.Conv2d(10, 14, 3, padding=0, bias=False),
            nn.BatchNorm2d(14),
            nn.ReLU(),
        )
        # 3x3 conv: 14 -> 6 channels, 11x11px -> 9x9px
        self.conv6 = nn.Sequential(
            nn.Conv2d(14, 6, 3, padding=0, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
        )
        # 3x3 conv: 6 -> 18 channels, 9x9px -> 7x7px
        self.conv7 = nn.Sequential(
            nn.Conv2d(6, 18, 3, padding=0, bias=False),
            nn.BatchNorm2d(18),
            nn.ReLU(),
        )
        # 3x3 conv: 18 -> 14 channels, 7x7px -> 5x5px
        self.conv8 = nn.Sequential(
            nn.Conv2d(18, 14, 3, padding=0, bias=False),
            nn.BatchNorm2d(14),
            nn.ReLU(),
        )
        # head: global average pool, then 14 -> 10 logits
        self.head = nn.Linear(14, 10, bias=False)

    def forward(self, x):
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.pool1(x)
        x = self.conv4(x)
        x = self.conv5(x)
        x = self.conv6(x)
        x = self.conv7(x)
        x = self.conv8(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


# ----------------------------------------------------------------------------- training: budgetnas's search/engine/loop.py
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


# ----------------------------------------------------------------------------- data: budgetnas's search/engine/read.py
IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NPZ = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


class DataError(ValueError):
    """The data cannot be used as it is; the message is one line naming the file and the fix."""


def read(path, test=True):
    """(train, test, class_names) from `path`: train and test are (images, labels); test is None
    when `test` is False (its files are then never opened); class_names None but for folders."""
    path = Path(path)
    if path.suffix == ".npz":
        (train, tst), names = _npz(path, test), None
    elif (path / "train").is_dir():
        train, tst, names = _folder(path, test)
    elif path.is_dir() and any((path / (IDX["train"][0] + gz)).exists() for gz in ("", ".gz")):
        train, tst, names = _idx_split(path, "train"), _idx_split(path, "test") if test else None, None
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    else:
        raise DataError(f"{path}: not a dataset; expected a .npz (x_train, y_train, x_test, y_test), a folder with "
                        "train/<class>/ and test/<class>/ images, or a folder with the four MNIST-style IDX files")
    return _checked(path, train, tst) + (names,)


def _checked(path, train, test):
    """No split empty, labels >= 0, test's classes among train's; labels numbered 0..K-1 in the
    order of their values, K the classes train holds (1-based labels, EMNIST letters' 1..26, or
    gaps cost no unused logits; exported modules read the data through this same function)."""
    for name, split in (("train", train), ("test", test)):
        if split is not None and not len(split[1]):
            raise DataError(f"{path}: the {name} split is empty")
    x, y = train
    if x.shape[0] != y.shape[0] or (test is not None and test[0].shape[0] != test[1].shape[0]):
        raise DataError(f"{path}: the number of images and of labels differ")
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: test images are {_shape(test[0])} but train images {_shape(x)}; they must match")
    low = min(int(y.min()), int(test[1].min()) if test is not None else 0)
    if low < 0:
        raise DataError(f"{path}: labels must be class numbers >= 0, but some are {low}; drop those images "
                        "(unlabelled?) or renumber them")
    classes = y.unique()  # sorted
    if len(classes) < 2:
        raise DataError(f"{path}: every training image has label {int(classes[0])}; a classifier needs two "
                        "classes or more")
    if test is not None:
        unseen = sorted(set(test[1].unique().tolist()) - set(classes.tolist()))
        if unseen:
            raise DataError(f"{path}: test labels {unseen[:5]} never occur in train; a model cannot learn them "
                            "(drop them, or add training images of those classes)")
    if int(classes[-1]) != len(classes) - 1:
        train = (x, torch.searchsorted(classes, y))
        test = test if test is None else (test[0], torch.searchsorted(classes, test[1]))
    return train, test


def _shape(x):
    return "x".join(str(d) for d in x.shape[2:]) + f" with {x.shape[1]} channel(s)"


def available_bytes():
    """Memory the data may take: MemAvailable on Linux; None where unknown (no check)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _fits_memory(path, shape):
    need, free = 1, available_bytes()
    for d in shape:
        need *= d
    if free is not None and need > 0.8 * free:
        raise DataError(f"{path}: {need / 2**30:.1f} GiB of images, but only {free / 2**30:.1f} GiB of memory is "
                        "free; use a subset of the data or a machine with more memory")


def _channels_last(path, key, shape):
    """Colour images are (N, H, W, C), as Keras saves them; (N, C, H, W), PyTorch's order, would be read
    as C rows of W-channel pixels and train without an error, so it is refused."""
    if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] > 4:
        raise DataError(f"{path}: {key} is {tuple(shape)}, which looks like (N, C, H, W); images are read as "
                        "(N, H, W, C): save them as x.transpose(0, 2, 3, 1)")


# ----------------------------------------------------------------------------- idx
def _idx_split(folder, which):
    images, labels = (_idx_file(folder, name, (3, 4) if i == 0 else (1,)) for i, name in enumerate(IDX[which]))
    if images.dim() == 3:
        images = images.unsqueeze(1)
    else:
        images = images.permute(0, 3, 1, 2).contiguous()
    return images, labels.long()


def _idx_file(folder, name, ndims):
    path = next((p for p in (folder / (name + ".gz"), folder / name) if p.exists()), folder / (name + ".gz"))
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            if len(head) < 4 or head[:3] != b"\0\0\x08" or ndim not in ndims:
                raise DataError(f"{path}: not an IDX file of unsigned bytes with {' or '.join(map(str, ndims))} dims "
                                f"(magic {head.hex() or 'empty'}); is it the right file?")
            dims = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
            _channels_last(path, "the images", dims)
            _fits_memory(path, dims)
            need = 1
            for d in dims:
                need *= d
            raw = f.read(need + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # a corrupt gzip stream, a folder, a permission
        raise DataError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e}); the file is corrupt or "
                        "truncated") from None
    if len(raw) != need:
        raise DataError(f"{path}: header says {dims} ({need:,} bytes) but {'more' if len(raw) > need else len(raw)} "
                        "bytes follow; the file is truncated or corrupt")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(dims) if need else torch.zeros(dims, dtype=torch.uint8)


# ----------------------------------------------------------------------------- npz
def _npz(path, test):
    import numpy as np

    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz ({e})") from None
    with archive:
        members = {n.removesuffix(".npy") for n in archive.namelist()}
        wanted = NPZ["train"] + (NPZ["test"] if test else ())
        missing = [k for k in wanted if k not in members]
        if missing:
            raise DataError(f"{path}: no array {missing[0]!r}; a dataset .npz holds x_train, y_train, x_test, y_test "
                            f"(it has {sorted(members)})")
        splits = []
        for which in ("train", "test") if test else ("train",):
            arrays = []
            for key in NPZ[which]:
                try:
                    with archive.open(key + ".npy") as f:
                        header = {(1, 0): np.lib.format.read_array_header_1_0,
                                  (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(f))
                        shape, _, dtype = header(f) if header else (None, None, None)
                    if shape is not None:  # what is in it, from the header, before anything is loaded
                        _check_array(path, key, shape, dtype)
                    with archive.open(key + ".npy") as f:
                        array = np.lib.format.read_array(f, allow_pickle=False)
                    _check_array(path, key, array.shape, array.dtype)
                    arrays.append(array)
                except DataError:
                    raise
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                    raise DataError(f"{path}: cannot read {key} ({e}); the file is corrupt or truncated") from None
            x, y = arrays
            x = torch.from_numpy(np.ascontiguousarray(x))
            x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
            splits.append((x, torch.from_numpy(y.reshape(-1).astype(np.int64))))
    return splits[0], splits[1] if test else None


def _check_array(path, key, shape, dtype):
    if key.startswith("x"):
        if dtype != "uint8" or len(shape) not in (3, 4):
            raise DataError(f"{path}: {key} is {dtype} {shape}; expected uint8 images (N, H, W) or (N, H, W, C), "
                            "values 0..255")
        _channels_last(path, key, shape)
        _fits_memory(path, shape)
    elif dtype.kind not in "iu" or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise DataError(f"{path}: {key} is {dtype} {shape}; expected integer labels, shape (N,)")


# ----------------------------------------------------------------------------- image folder
def _folder(root, test):
    import struct  # here, not at the top: an exported module carries this function without the file's imports

    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{root}: reading an image folder needs Pillow (pip install pillow)") from None
    # How Pillow refuses a file: OSError (UnidentifiedImageError, truncated data), ValueError and
    # SyntaxError (a plugin's bad header), EOFError, struct.error, or a decompression bomb.
    PILLOW_REFUSALS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
    names = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"{root / 'train'}: no class folders; expected train/<class>/<image>")
    index = {n: i for i, n in enumerate(names)}
    listed = {}
    for which in ("train", "test") if test else ("train",):
        if not (root / which).is_dir():
            raise DataError(f"{root / which}: no such folder; an image folder dataset has train/ and test/")
        files = []
        for d in sorted((root / which).iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            if d.name not in index:
                raise DataError(f"{d}: class {d.name!r} is in {which}/ but not in train/; a model cannot learn it")
            files += [(f, index[d.name]) for f in sorted(d.iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        listed[which] = files
    first, size, grey = None, None, True
    for which, files in listed.items():  # sizes and modes first, from the headers (a 32-bit one: its range too)
        for f, _ in files:
            try:
                with Image.open(f) as im:
                    if size is None:
                        first, size = f, im.size
                    elif im.size != size:
                        raise DataError(f"{f}: {im.size[0]}x{im.size[1]} pixels, but {first} is {size[0]}x{size[1]}; "
                                        "every image must have one size (resize them first)")
                    if im.mode == "F" or (im.mode == "I" and im.getextrema()[1] > 65535):
                        raise DataError(f"{f}: {'32-bit float' if im.mode == 'F' else 'over-16-bit'} pixels have no "
                                        "fixed range to map to 0..255; save the images with 8 or 16 bits")
                    grey = grey and (im.mode in ("1", "L", "LA", "I") or im.mode.startswith("I;16"))
            except DataError:  # ours, said already (a ValueError, as some of Pillow's refusals are)
                raise
            except PILLOW_REFUSALS as e:
                raise DataError(f"{f}: not a readable image ({type(e).__name__}: {e}); remove or replace it") from None
    if size is not None:
        _fits_memory(root, (sum(len(v) for v in listed.values()), 1 if grey else 3, size[0], size[1]))
    out = []
    for which, files in listed.items():
        x = torch.empty((len(files), 1 if grey else 3, size[1], size[0]) if files else (0, 1, 1, 1), dtype=torch.uint8)
        for i, (f, _) in enumerate(files):
            try:
                with Image.open(f) as im:
                    if im.mode == "I" or im.mode.startswith("I;16"):  # 16 bits to 8 by their depth (convert clips at 255)
                        im = im.convert("I").point(lambda v: v / 257 + 0.5)
                    pixels = torch.frombuffer(bytearray(im.convert("L" if grey else "RGB").tobytes()), dtype=torch.uint8)
            except PILLOW_REFUSALS as e:
                raise DataError(f"{f}: not a readable image ({type(e).__name__}: {e}); remove or replace it") from None
            x[i] = pixels.reshape(size[1], size[0], -1).permute(2, 0, 1)
        out.append((x, torch.tensor([c for _, c in files], dtype=torch.int64)))
    return out[0], out[1] if test else None, names


# ----------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", "--data-dir", required=True, help="the dataset: an IDX folder, a .npz or an image folder")
    p.add_argument("--seed", type=int, default=0, help="fixes initialisation, data order and augmentation")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="default: the recipe's")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); a seed's numbers depend on them")
    p.add_argument("--history", help="also write the per-epoch records to this JSON file")
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be at least 1, but got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        train, test, _ = read(args.data)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    if tuple(train[0].shape[1:]) != INPUT or int(train[1].max()) + 1 != CLASSES:
        raise SystemExit(f"error: {args.data}: images {tuple(train[0].shape[1:])} with {int(train[1].max()) + 1} "
                         f"classes, but this model takes {INPUT} with {CLASSES}")
    mean, std = channel_stats(train[0])
    print(f"{PARAMS} parameters, seed {args.seed}")

    def show(r):
        print(f"epoch {r['epoch']:2d}  loss {r['train_loss']:.4f}  train {r['train_acc']:.2f}%  "
              f"test {r['test_acc']:.2f}%  {r['seconds']:.1f}s", flush=True)

    history = fit(Net, {**RECIPE, "epochs": args.epochs}, train, {"test": test}, mean, std, seed=args.seed,
                  device=args.device, on_epoch=show)
    if args.history:
        Path(args.history).write_text(json.dumps(history, indent=1) + "\n")
    return history


if __name__ == "__main__":
    main()
