"""A 5,404-parameter CNN for 28x28 grey-scale images, exported by budgetnas.

Drill: mnist-drill-7k-2, Narrow trial 3, picked by the race
Budget: 7000 params; this model has 5404
Race: validation, worst of the last 3 epochs per seed: 99.12%

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

PARAMS = 5404  # trainable parameters

RECIPE = {
    "optimizer": "sgd",  # sgd (Nesterov, momentum 0.9) | adam | adamw
    "lr": 0.1,  # peak learning rate
    "weight_decay": 0.0,  # L2 (sgd/adam) or decoupled (adamw)
    "schedule": "onecycle",  # none | step | onecycle | cosine, stepped every batch
    "step_every": 5,  # step schedule: epochs between decays
    "step_gamma": 0.1,  # step schedule: decay factor
    "epochs": 15,  # passes over the training images
    "batch_size": 128,  # images per optimizer step
    "rotate": 7.5,  # augmentation: max random rotation, degrees
    "translate": 0.0,  # augmentation: max random shift, fraction of the side
    "ema": 0.0,  # decay per step of the weight average that is tested; 0: off
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # 3x3 conv: 1 -> 8 channels, 28px -> 26px
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=0, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        # 3x3 conv: 8 -> 8 channels, 26px -> 24px
        self.conv2 = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=0, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        # 3x3 conv: 8 -> 14 channels, 24px -> 22px
        self.conv3 = nn.Sequential(
            nn.Conv2d(8, 14, 3, padding=0, bias=False),
            nn.BatchNorm2d(14),
            nn.ReLU(),
        )
        # max-pool: 22px -> 11px
        self.pool1 = nn.MaxPool2d(2)
        # 1x1 transition: 14 -> 8 channels, 11px -> 11px
        self.conv4 = nn.Sequential(
            nn.Conv2d(14, 8, 1, padding=0, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        # 3x3 conv: 8 -> 8 channels, 11px -> 9px
        self.conv5 = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=0, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        # 3x3 conv: 8 -> 14 channels, 9px -> 7px
        self.conv6 = nn.Sequential(
            nn.Conv2d(8, 14, 3, padding=0, bias=False),
            nn.BatchNorm2d(14),
            nn.ReLU(),
        )
        # 3x3 conv: 14 -> 14 channels, 7px -> 7px
        self.conv7 = nn.Sequential(
            nn.Conv2d(14, 14, 3, padding=1, bias=False),
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
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


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
    schedules = {
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, r["lr"], total_steps=r["epochs"] * steps),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, r["epochs"] * steps),
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, r["step_every"] * steps, r["step_gamma"]),
        "none": lambda: torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
    }
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
        print(f"epoch {epoch:2d}  test {accuracies[-1]:.2f}%  {time.perf_counter() - t0:.1f}s")
    return accuracies


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    print(f"{PARAMS} parameters")
    train(args.data_dir, args.seed, args.device)
