"""Arch -> a standalone Python module (torch + standard library only) that a person can read,
retrain and verify without budgetnas installed.

The class is written out layer by layer in the same order `build` creates them, so for a
given seed `Net()` starts from exactly the same weights as `build(arch)`.
"""

from __future__ import annotations

import json

from space.arch import Arch, Conv, feature_shape
from space.build import count_params


def _layers(arch: Arch) -> tuple[list[str], list[str]]:
    """Lines of __init__ and of forward, with the feature-map side in the comments."""
    init, fwd = [], []
    c, side, n_conv, n_pool, depthwise_before = arch.in_channels, arch.image_size, 0, 0, False
    for b in arch.blocks:
        if isinstance(b, Conv):
            n_conv += 1
            new_side = side + 2 * b.pad - b.k + 1
            groups = f", groups={b.groups}" if b.groups > 1 else ""
            parts = [f"nn.Conv2d({c}, {b.out}, {b.k}, padding={b.pad}{groups}, bias={not arch.bn})"]
            parts += [f"nn.BatchNorm2d({b.out})"] if arch.bn else []
            parts += ["nn.ReLU()"] + ([f"nn.Dropout({arch.dropout})"] if arch.dropout > 0 else [])
            kind = f"{b.k}x{b.k} {'depthwise ' if b.groups > 1 else ''}conv"
            if b.k == 1:
                kind = "1x1 pointwise conv" if depthwise_before else "1x1 transition"
            depthwise_before = b.groups > 1
            init.append(f"        # {kind}: {c} -> {b.out} channels, {side}px -> {new_side}px")
            init.append(f"        self.conv{n_conv} = nn.Sequential(")
            init += [f"            {part}," for part in parts] + ["        )"]
            fwd.append(f"        x = self.conv{n_conv}(x)")
            c, side = b.out, new_side
        else:
            n_pool += 1
            init.append(f"        # max-pool: {side}px -> {side // b.size}px")
            init.append(f"        self.pool{n_pool} = nn.MaxPool2d({b.size})")
            fwd.append(f"        x = self.pool{n_pool}(x)")
            side //= b.size
    c, side = feature_shape(arch)
    if arch.head == "gap":
        init.append(f"        # head: global average pool, then {c} -> {arch.classes} logits")
        init.append(f"        self.head = nn.Linear({c}, {arch.classes}, bias=False)")
        fwd.append("        x = F.adaptive_avg_pool2d(x, 1).flatten(1)")
    else:
        init.append(f"        # head: flatten {c}x{side}x{side}, then -> {arch.classes} logits")
        init.append(f"        self.head = nn.Linear({c * side * side}, {arch.classes}, bias=False)")
        fwd.append("        x = x.flatten(1)")
    fwd.append("        return self.head(x)")
    return init, fwd


def render(arch: Arch, provenance: dict) -> str:
    """The module's source. `provenance` lines (study, trial, date, budget, val accuracy...)
    go into its docstring as `key: value`."""
    init, fwd = _layers(arch)
    r = arch.recipe
    recipe = "\n".join(f"    {json.dumps(k)}: {json.dumps(v)},  # {RECIPE_UNITS[k]}" for k, v in r.__dict__.items())
    prov = "\n".join(f"{docstring_text(k)}: {docstring_text(v)}" for k, v in provenance.items())
    return TEMPLATE.format(
        params=count_params(arch),
        provenance=prov,
        init="\n".join(init),
        forward="\n".join(fwd),
        recipe=recipe,
    )


def docstring_text(value) -> str:
    """`value` as text that cannot end the module's docstring or start an escape: a study name,
    a path or any text a storage hands us is data, never code. Every string the template
    receives from outside passes through here; numbers and the recipe go in as `repr`/JSON."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return "".join(c if c.isprintable() or c == "\n" else f"\\x{ord(c):02x}" for c in text)


RECIPE_UNITS = {
    "optimizer": "sgd (Nesterov, momentum 0.9) | adam | adamw",
    "lr": "peak learning rate",
    "weight_decay": "L2 (sgd/adam) or decoupled (adamw)",
    "schedule": "none | step | onecycle | cosine, stepped every batch",
    "step_every": "step schedule: epochs between decays",
    "step_gamma": "step schedule: decay factor",
    "epochs": "passes over the training images",
    "batch_size": "images per optimizer step",
    "rotate": "augmentation: max random rotation, degrees",
    "translate": "augmentation: max random shift, fraction of the side",
    "ema": "decay per step of the weight average that is tested; 0: off",
}

TEMPLATE = '''"""A {params:,}-parameter CNN for 28x28 grey-scale images, exported by budgetnas.

{provenance}

Standalone: needs only torch. Retrain and test on IDX files (MNIST layout):
    python this_file.py --data-dir DIR/MNIST/raw --seed 0
"""

import argparse
import copy
import gzip
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PARAMS = {params}  # trainable parameters

RECIPE = {{
{recipe}
}}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
{init}

    def forward(self, x):
{forward}


# ----------------------------------------------------------------------------- data
def read_idx(path):
    raw = gzip.decompress(Path(path).read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def augment(x, rotate, translate):
    """Random rotation (+-rotate degrees) and shift (+-translate of the side), per image."""
    if rotate == 0 and translate == 0:
        return x
    u = torch.rand(len(x), 3, device=x.device) * 2 - 1
    a, shift = u[:, 0] * math.radians(rotate), u[:, 1:] * 2 * translate
    theta = torch.stack([torch.stack([a.cos(), -a.sin(), shift[:, 0]], 1),
                         torch.stack([a.sin(), a.cos(), shift[:, 1]], 1)], 1)
    return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


# ----------------------------------------------------------------------------- training
def train(data_dir, seed=0, device="cpu"):
    """Train on all training images by RECIPE; print and return test accuracy (%) per epoch."""
    r, d = RECIPE, Path(data_dir)
    torch.manual_seed(seed)
    model = Net().to(device)
    xs = read_idx(d / "train-images-idx3-ubyte.gz").to(device)
    ys = read_idx(d / "train-labels-idx1-ubyte.gz").long().to(device)
    xt = read_idx(d / "t10k-images-idx3-ubyte.gz").to(device)
    yt = read_idx(d / "t10k-labels-idx1-ubyte.gz").long().to(device)
    mean, std = xs.float().div(255).mean(), xs.float().div(255).std()
    steps = math.ceil(len(ys) / r["batch_size"])
    if r["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), r["lr"], momentum=0.9, nesterov=True,
                              weight_decay=r["weight_decay"])
    else:
        opt_class = torch.optim.Adam if r["optimizer"] == "adam" else torch.optim.AdamW
        opt = opt_class(model.parameters(), r["lr"], weight_decay=r["weight_decay"])
    schedules = {{
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, r["lr"], total_steps=r["epochs"] * steps),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, r["epochs"] * steps),
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, r["step_every"] * steps, r["step_gamma"]),
        "none": lambda: torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
    }}
    sched = schedules[r["schedule"]]()
    # with ema, what is tested is a moving average of the weights and BatchNorm statistics,
    # its decay warmed up as min(ema, (1 + step) / (10 + step))
    tested = copy.deepcopy(model) if r["ema"] else model
    pairs = list(zip(tested.state_dict().values(), model.state_dict().values()))  # views, not copies
    floats = [(avg, cur) for avg, cur in pairs if avg.is_floating_point()]  # weights, BatchNorm statistics
    counters = [(avg, cur) for avg, cur in pairs if not avg.is_floating_point()]  # BatchNorm step counts
    accuracies = []
    for epoch in range(1, r["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(ys), device=device)
        for i in range(steps):
            idx = order[i * r["batch_size"] : (i + 1) * r["batch_size"]]
            x = augment(xs[idx].unsqueeze(1).float() / 255, r["rotate"], r["translate"])
            loss = F.cross_entropy(model((x - mean) / std), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if r["ema"]:
                step = (epoch - 1) * steps + i
                decay = min(r["ema"], (1 + step) / (10 + step))
                with torch.no_grad():
                    for avg, cur in floats:
                        avg.lerp_(cur, 1 - decay)
                    for avg, cur in counters:
                        avg.copy_(cur)
        tested.eval()
        with torch.inference_mode():
            hits = sum((tested((xt[i : i + 4096].unsqueeze(1).float() / 255 - mean) / std).argmax(1)
                        == yt[i : i + 4096]).sum().item() for i in range(0, len(yt), 4096))
        accuracies.append(100.0 * hits / len(yt))
        print(f"epoch {{epoch:2d}}  test {{accuracies[-1]:.2f}}%  {{time.perf_counter() - t0:.1f}}s")
    return accuracies


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    print(f"{{PARAMS}} parameters")
    train(args.data_dir, args.seed, args.device)
'''
