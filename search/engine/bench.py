"""`budgetnas bench`: our training engine vs a course notebook's loop, side by side in one run.

Reference loop: a `Dataset` whose `__getitem__` normalises and augments one image at a time
(random rotation/shift through `affine_grid`/`grid_sample` on that one image, as
torchvision's RandomAffine does per sample), a `DataLoader` with batch 128, fp32. Ours:
whole split as one uint8 tensor, batched augmentation, no DataLoader, then each engine
setting (bf16 autocast, torch.compile) on its own and together, so that each is measured
for what it adds. All train the same architecture on the same images with the same
optimizer; each measurement runs in its own subprocess so that peak memory (max RSS) is its own.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ...space import Arch, build
from .data import Split, load
from .loop import EVAL_BATCH, augment, evaluate, make_optimizer, to_unit
from .train import Engine, bf16_pays, compile_pays, threads_each, train


class PerSampleDataset(Dataset):
    """What a course notebook does: one image at a time, in Python."""

    def __init__(self, split: Split, mean: torch.Tensor, std: torch.Tensor, rotate: float, translate: float):
        self.split, self.mean, self.std, self.rotate, self.translate = split, mean, std, rotate, translate
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        x = augment(to_unit(self.split.images[i : i + 1]), self.rotate, self.translate, self.gen)[0]
        return (x - self.mean) / self.std, self.split.labels[i]


def sync(device: torch.device) -> None:
    """CUDA runs behind the host: wait for it before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_train(arch: Arch, split: Split, mean: torch.Tensor, std: torch.Tensor, epochs: int, device: torch.device) -> list[float]:
    """Seconds of each epoch of the reference loop over `split`; with CUDA each batch is copied
    there, as a notebook's `x.to(device)` does."""
    model = build(arch).to(device)
    opt = make_optimizer(model, asdict(arch.recipe))
    loader = DataLoader(PerSampleDataset(split, mean, std, arch.recipe.rotate, arch.recipe.translate),
                        batch_size=128, shuffle=True)
    model.train()
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return seconds


def reference_eval(arch: Arch, split: Split, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> float:
    model = build(arch).to(device).eval()
    loader = DataLoader(PerSampleDataset(split, mean, std, 0, 0), batch_size=1000)
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device))
    sync(device)
    return time.perf_counter() - t0


# Our engine's settings (on the bench's device), measured one by one against the reference.
ENGINES = {
    "reference": None,
    "ours fp32": Engine(precision="fp32", compile="off"),
    "ours bf16": Engine(precision="bf16", compile="off"),
    "ours fp32+compile": Engine(precision="fp32", compile="on"),
    "ours bf16+compile": Engine(precision="bf16", compile="on"),
}


def search_engine(device: str) -> str:
    """The setting `search` trains with on `device` (Engine's auto): the one `speedup=` reports."""
    dev = torch.device(device)
    return f"ours {'bf16' if bf16_pays(dev) else 'fp32'}{'+compile' if compile_pays(dev) else ''}"


EPOCHS = 2  # throughput is the last epoch's; the first also pays start-up (oneDNN kernels, torch.compile)


def measure(name: str, arch_json: str, images: int, source: list, threads: int, device: str = "cpu") -> dict:
    """One measurement in this process: images/s for training and for evaluation, start-up, peak
    RSS (and, on CUDA, peak GPU memory). `source`: (dataset, data root)."""
    torch.set_num_threads(threads)
    arch = Arch.from_json(arch_json).with_recipe(epochs=EPOCHS)
    data = load(*source, val_size=0, subset=images)
    split, engine, dev = data.train, ENGINES[name], torch.device(device)
    if engine is None:
        seconds = reference_train(arch, split, data.mean, data.std, EPOCHS, dev)
        eval_s = reference_eval(arch, split, data.mean, data.std, dev)
    else:
        history = train(partial(build, arch), arch.recipe, data, engine=replace(engine, device=device), progress=False)
        seconds = [r["seconds"] for r in history]  # no val/test split here: pure training
        on_dev = Split(split.images.to(dev), split.labels.to(dev))  # as train() holds it
        t0 = time.perf_counter()
        evaluate(build(arch).to(dev), on_dev.images, on_dev.labels, data.mean.to(dev), data.std.to(dev))
        eval_s = time.perf_counter() - t0
    row = {"engine": name, "device": device, "train_img_s": len(split) / seconds[-1],
           "startup_s": max(0.0, seconds[0] - seconds[-1]), "eval_img_s": len(split) / eval_s,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "threads": threads, "eval_batch": 1000 if engine is None else EVAL_BATCH}
    if dev.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return row


def spawn(name: str, arch: Arch, images: int, source: tuple, threads: int, cache: str,
          device: str = "cpu") -> subprocess.Popen:
    """One measurement in a fresh process; `cache` is its torch.compile cache (empty: cold start-up)."""
    args = json.dumps([name, arch.to_json(), images, list(source), threads, device])
    return subprocess.Popen([sys.executable, "-m", __name__, args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})


def collect(procs: list[subprocess.Popen]) -> list[dict]:
    """Wait for measurements running side by side; the first failure's last stderr line is the error."""
    outs = [p.communicate() for p in procs]
    failed = [err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode]
    if failed:
        raise RuntimeError(f"bench subprocess failed: {failed[0].strip().splitlines()[-1]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def run_bench(arch: Arch, images: int, source: tuple, threads: int, repeats: int,
              device: str = "cpu") -> list[dict]:
    """Cycle through the engines `repeats` times (so drift hits all alike), one process at a time."""
    rows = []
    for _ in range(repeats):
        for name in ENGINES:
            with tempfile.TemporaryDirectory() as cache:
                rows += collect([spawn(name, arch, images, source, threads, cache, device)])
    return rows


def table(rows: list[dict]) -> str:
    """Medians per engine; speedups are per repeat (each engine vs that repeat's reference), then the median."""
    gpu = "peak_gpu_mb" in rows[0]
    keys = ("train_img_s", "startup_s", "eval_img_s", "peak_rss_mb") + (("peak_gpu_mb",) if gpu else ())
    lines = [f"{'engine':<18} {'train img/s':>12} {'speedup':>8} {'start-up s':>11} {'eval img/s':>11} {'peak RSS MB':>12}"
             + (f" {'peak GPU MB':>12}" if gpu else "")]
    by = {name: [r for r in rows if r["engine"] == name] for name in ENGINES}
    ratios = {name: [o["train_img_s"] / r["train_img_s"] for r, o in zip(by["reference"], rs, strict=True)]
              for name, rs in by.items()}
    for name, rs in by.items():
        med = {k: statistics.median(r[k] for r in rs) for k in keys}
        lines.append(f"{name:<18} {med['train_img_s']:>12.0f} {statistics.median(ratios[name]):>8.2f} "
                     f"{med['startup_s']:>11.1f} {med['eval_img_s']:>11.0f} {med['peak_rss_mb']:>12.0f}"
                     + (f" {med['peak_gpu_mb']:>12.0f}" if gpu else ""))
    engine = search_engine(rows[0].get("device", "cpu"))
    search = ratios[engine]
    lines.append(f"per-repeat training speedups of {engine}: {', '.join(f'{x:.2f}' for x in search)} "
                 f"(median of {len(search)})")
    lines.append(f"speedup={statistics.median(search):.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- workers on one machine


def run_workers_bench(arch: Arch, images: int, source: tuple, cores: int, ks: list[int],
                      repeats: int) -> list[dict]:
    """For each K: K simultaneous trainings, `cores // K` threads each, as `search --workers K` runs
    them; the row's throughput is the sum over the K processes. Cycled `repeats` times."""
    rows = []
    for _ in range(repeats):
        for k in ks:
            threads = threads_each(k, cores)
            with tempfile.TemporaryDirectory() as cache:  # shared by the K workers, as on one machine
                each = [r["train_img_s"] for r in collect([spawn(search_engine("cpu"), arch, images, source, threads, cache)
                                                           for _ in range(k)])]
            rows.append({"workers": k, "threads": threads, "train_img_s": sum(each), "per_worker": each})
    return rows


def workers_table(rows: list[dict]) -> str:
    ks = sorted({r["workers"] for r in rows})
    med = {k: statistics.median(r["train_img_s"] for r in rows if r["workers"] == k) for k in ks}
    lines = [f"{'workers':>7} {'threads each':>12} {'train img/s (sum)':>18} {'vs 1 worker':>12}"]
    for k in ks:
        threads = next(r["threads"] for r in rows if r["workers"] == k)
        lines.append(f"{k:>7} {threads:>12} {med[k]:>18.0f} {med[k] / med[ks[0]]:>12.2f}")
    lines.append(f"best_workers={max(ks, key=med.get)}")
    return "\n".join(lines)


if __name__ == "__main__":  # one measurement in its own process (spawn): `python -m budgetnas.search.engine.bench ARGS`
    print(json.dumps(measure(*json.loads(sys.argv[1]))))
