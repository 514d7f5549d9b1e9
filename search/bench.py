"""`budgetnas bench`: our training engine vs a course notebook's loop, side by side in one run.

Reference loop: a `Dataset` whose `__getitem__` normalises and augments one image at a time
(random rotation/shift through `affine_grid`/`grid_sample` on that one image, as
torchvision's RandomAffine does per sample), a `DataLoader` with batch 128, fp32. Ours:
whole split as one uint8 tensor, batched augmentation, no DataLoader. Both train the same
architecture on the same images with the same optimizer; each measurement runs in its own
subprocess so that peak memory (max RSS) is its own.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from search.data import Split, load
from search.train import EVAL_BATCH, augment, evaluate, make_optimizer, to_unit, train
from space import Arch, build


class PerSampleDataset(Dataset):
    """What a course notebook does: one image at a time, in Python."""

    def __init__(self, split: Split, mean: float, std: float, rotate: float, translate: float):
        self.split, self.mean, self.std, self.rotate, self.translate = split, mean, std, rotate, translate
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        x = augment(to_unit(self.split.images[i : i + 1]), self.rotate, self.translate, self.gen)[0]
        return (x - self.mean) / self.std, self.split.labels[i]


def reference_train(arch: Arch, split: Split, mean: float, std: float) -> float:
    """Seconds for one epoch of the reference loop over `split`."""
    model = build(arch)
    opt = make_optimizer(model, arch.recipe)
    loader = DataLoader(PerSampleDataset(split, mean, std, arch.recipe.rotate, arch.recipe.translate),
                        batch_size=128, shuffle=True)
    t0 = time.perf_counter()
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def reference_eval(arch: Arch, split: Split, mean: float, std: float) -> float:
    model = build(arch).eval()
    loader = DataLoader(PerSampleDataset(split, mean, std, 0, 0), batch_size=1000)
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    return time.perf_counter() - t0


def measure(engine: str, arch_json: str, images: int, data_dir: str | None, threads: int) -> dict:
    """One measurement in this process: images/s for training and for evaluation, peak RSS."""
    torch.set_num_threads(threads)
    arch = Arch.from_json(arch_json).with_recipe(epochs=1)
    data = load("mnist", data_dir, val_size=0, subset=images)
    split = data.train
    if engine == "reference":
        train_s = reference_train(arch, split, data.mean, data.std)
        eval_s = reference_eval(arch, split, data.mean, data.std)
    else:
        t0 = time.perf_counter()
        train(partial(build, arch), arch.recipe, data, device="cpu", progress=False)
        train_s = time.perf_counter() - t0  # includes nothing but training: no val/test split here
        t0 = time.perf_counter()
        evaluate(build(arch), split, data.mean, data.std, torch.device("cpu"))
        eval_s = time.perf_counter() - t0
    return {"engine": engine, "train_img_s": len(split) / train_s, "eval_img_s": len(split) / eval_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": threads,
            "eval_batch": EVAL_BATCH if engine == "ours" else 1000}


def run_bench(arch: Arch, images: int, data_dir: str | None, threads: int, repeats: int) -> list[dict]:
    """Alternate the engines `repeats` times (so drift hits both alike); each in a subprocess."""
    rows = []
    for _ in range(repeats):
        for engine in ("reference", "ours"):
            code = ("import json, sys; from search.bench import measure; "
                    "print(json.dumps(measure(*json.loads(sys.argv[1]))))")
            args = json.dumps([engine, arch.to_json(), images, data_dir, threads])
            out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"bench subprocess failed: {out.stderr.strip().splitlines()[-1]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'engine':<10} {'train img/s':>12} {'eval img/s':>11} {'peak RSS MB':>12}"]
    by = {e: [r for r in rows if r["engine"] == e] for e in ("reference", "ours")}
    for e, rs in by.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("train_img_s", "eval_img_s", "peak_rss_mb")}
        lines.append(f"{e:<10} {med['train_img_s']:>12.0f} {med['eval_img_s']:>11.0f} {med['peak_rss_mb']:>12.0f}")
    ratios = [o["train_img_s"] / r["train_img_s"] for r, o in zip(by["reference"], by["ours"], strict=True)]
    lines.append(f"per-repeat training speedups: {', '.join(f'{x:.2f}' for x in ratios)} (median of {len(ratios)})")
    lines.append(f"speedup={statistics.median(ratios):.2f}")
    return "\n".join(lines)
