"""`budgetnas bench`: our training engine vs a course notebook's loop, side by side in one run.

Reference loop: a `Dataset` whose `__getitem__` normalises and augments one image at a time
(random rotation/shift through `affine_grid`/`grid_sample` on that one image, as
torchvision's RandomAffine does per sample), a `DataLoader` with batch 128, fp32. Ours:
whole split as one uint8 tensor, batched augmentation, no DataLoader, then each engine
setting (bf16 autocast, torch.compile) on its own and together, so that each is measured
for what it adds. All train the same architecture on the same images with the same
optimizer; each measurement runs in its own subprocess so that peak memory (max RSS) is its own.

`--trainings` turns speed into the drill's currency: full trainings an hour, with the engine each
drill stage trains with, run as the drill runs it (one single-threaded worker a core), beside
the old way (fp32, eager, one process with every thread), from the same per-epoch timings.
"""

from __future__ import annotations

import contextlib
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

from ...space import Arch, build, count_params
from .data import Data, Split, load
from .loop import EVAL_BATCH, augment, evaluate, make_optimizer, to_unit
from .train import VERIFY_ENGINE, Engine, threads_each, train


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


def engine_label(engine: Engine | dict) -> str:
    """"bf16+channels-last", "fp32 eager", ...: what a pinned engine adds to fp32, NCHW, eager."""
    e = engine if isinstance(engine, dict) else engine.to_dict()
    extras = [name for name, key in (("compile", "compile"), ("channels-last", "channels_last")) if e.get(key) == "on"]
    extras += ["fast-masks"] if e.get("masks") == "fast" else []
    return e["precision"] + ("+" + "+".join(extras) if extras else " eager")


# Our engine's settings (on the bench's device), measured one by one against the reference.
# Each with torch's dropout masks, then the search engine of a CPU, which adds the fast ones.
ENGINES = {"reference": None} | {
    f"ours {engine_label(e)}": e for e in (
        *(Engine(precision=precision, compile=compiled, channels_last=layout, masks="torch")
          for compiled, layout in (("off", "off"), ("on", "off"), ("off", "on")) for precision in ("fp32", "bf16")),
        Engine(precision="bf16", channels_last="on", masks="fast"))}


def search_engine(device: str) -> str:
    """The setting `search` trains with on `device` (Engine's auto): the one `speedup=` reports."""
    return f"ours {engine_label(Engine().pinned(torch.device(device)))}"


EPOCHS = 2  # throughput is the last epoch's; the first also pays start-up (oneDNN kernels, torch.compile)


def measure(name: str, arch_json: str, images: int, source: list, threads: int, device: str = "cpu",
            engine: dict | None = None) -> dict:
    """One measurement in this process: images/s for training and for evaluation, start-up, peak
    RSS (and, on CUDA, peak GPU memory). `source`: (dataset, data root). `engine` (Engine's fields):
    train with it instead of ENGINES[name], `name` then only labels the row."""
    torch.set_num_threads(threads)
    arch = Arch.from_json(arch_json).with_recipe(epochs=EPOCHS)
    data = load(*source, val_size=0, subset=images)
    split, dev = data.train, torch.device(device)
    engine = ENGINES[name] if engine is None else Engine(**engine)
    if engine is None:
        seconds = reference_train(arch, split, data.mean, data.std, EPOCHS, dev)
        eval_s = reference_eval(arch, split, data.mean, data.std, dev)
    else:
        engine = replace(engine, device=device)
        history = train(partial(build, arch), arch.recipe, data, engine=engine, progress=False)
        seconds = [r["seconds"] for r in history]  # no val/test split here: pure training
        on_dev = Split(split.images.to(dev), split.labels.to(dev))  # as train() holds it
        fmt = torch.channels_last if engine.resolve()[3] else torch.contiguous_format
        t0 = time.perf_counter()
        evaluate(build(arch).to(dev, memory_format=fmt), on_dev.images, on_dev.labels, data.mean.to(dev),
                 data.std.to(dev), fmt)
        eval_s = time.perf_counter() - t0
    row = {"engine": name, "device": device, "train_img_s": len(split) / seconds[-1],
           "startup_s": max(0.0, seconds[0] - seconds[-1]), "eval_img_s": len(split) / eval_s,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "threads": threads, "eval_batch": 1000 if engine is None else EVAL_BATCH}
    if dev.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return row


def spawn(name: str, arch: Arch, images: int, source: tuple, threads: int, cache: str,
          device: str = "cpu", engine: Engine | None = None) -> subprocess.Popen:
    """One measurement in a fresh process; `cache` is its torch.compile cache (empty: cold start-up)."""
    args = json.dumps([name, arch.to_json(), images, list(source), threads, device]
                      + ([engine.to_dict()] if engine is not None else []))
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


# ----------------------------------------------------------------------------- full trainings an hour

# What `--trainings` measures: the engine each drill stage trains with, run as the drill runs it
# (one worker a core, one thread each), and the old way (fp32, eager, one process with every
# thread) in the same run, so that the ratio is measured, not remembered.
TRAINING_ENGINES = ("search", "torch-masks", "compiled", "verify", "old")
# A full training of each, costed: the search stages (Explore and Narrow at full fidelity, Race)
# train on the training images less the default validation split and evaluate validation every
# epoch; verify trains on all training images and evaluates test every epoch.
STAGES = {"search": "explore/narrow/race", "torch-masks": "explore/narrow/race, torch masks",
          "compiled": "explore/narrow/race, compiled", "verify": "verify"}


def stage_engine(key: str) -> Engine:
    """The engine `key` trains a full training with, pinned for this CPU: search, the drill's
    engine (`Engine()`, auto) in Explore, Narrow and Race; torch-masks, the search engine before
    fast dropout masks; compiled, the search engine before channels last (bf16 where native,
    torch.compile, torch's masks); verify, VERIFY_ENGINE (fp32, eager, NCHW, torch's masks); old,
    the same on one process."""
    if key not in TRAINING_ENGINES:
        raise ValueError(f"engine must be one of {TRAINING_ENGINES}, but got {key!r}.")
    search = Engine(device="cpu").pinned()
    if key == "search":
        return search
    if key == "torch-masks":
        return replace(search, masks="torch")
    if key == "compiled":
        return replace(search, compile="on", channels_last="off", masks="torch")
    return Engine(device="cpu", **VERIFY_ENGINE)


def dataset_sizes(dataset: str, data_dir: str | None) -> dict:
    """Images a full training sees: training less the default validation split, validation, test."""
    full = load(dataset, data_dir, val_size=None)
    return {"train": len(full.train), "val": len(full.val) if full.val is not None else 0,
            "test": len(full.test) if full.test is not None else 0}


def run_trainings_bench(models: list[tuple[str, Arch]], images: int, source: tuple, cores: int, engines: list[str],
                        repeats: int, log=None) -> list[dict]:
    """For each model and engine: two epochs of `images` images in K processes side by side, K =
    `cores` workers of one thread for the stage engines (as the drill runs its workers), 1 of
    `cores` threads for the old way; each process with its own cold torch.compile cache (the
    drill's workers train different models). Cycled `repeats` times; one row per process."""
    rows = []
    for repeat in range(repeats):
        for label, arch in models:
            for key in engines:
                k = 1 if key == "old" else cores
                threads, engine = threads_each(k, cores), stage_engine(key)
                with contextlib.ExitStack() as stack:
                    caches = [stack.enter_context(tempfile.TemporaryDirectory()) for _ in range(k)]
                    got = collect([spawn(key, arch, images, source, threads, c, "cpu", engine) for c in caches])
                for worker, row in enumerate(got):
                    rows.append({**row, "model": label, "params": count_params(arch), "stage_engine": key,
                                 **engine.to_dict(), "workers": k,
                                 "worker": worker, "repeat": repeat, "images": images, "epochs": arch.recipe.epochs})
                if log:
                    speeds = " ".join(f"{r['train_img_s']:.0f}" for r in got)
                    startups = " ".join(f"{r['startup_s']:.1f}" for r in got)
                    log(f"  {label}, {key} ({engine_label(engine)}, {k} x {threads}): train img/s {speeds}, "
                        f"start-up s {startups}")
    return rows


def full_training(row: dict, stage: str, sizes: dict) -> tuple[float, float]:
    """(seconds an epoch, seconds a training) of one full training of `stage` at the row's speed:
    the steady seconds an image (the last epoch's) times what the stage trains on, plus one
    evaluation pass an epoch (validation in the search stages, test in verify), times the
    recipe's epochs, plus the row's start-up (the first epoch's excess)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {tuple(STAGES)}, but got {stage!r}.")
    n_train, n_eval = ((sizes["train"] + sizes["val"], sizes["test"]) if stage == "verify"
                       else (sizes["train"], sizes["val"]))
    epoch = n_train / row["train_img_s"] + n_eval / row["eval_img_s"]
    return epoch, row["epochs"] * epoch + row["startup_s"]


def trainings_figures(rows: list[dict], sizes: dict) -> list[dict]:
    """Per model and stage: the stage's engine (`new`) and the old way (`old`), each with seconds
    an epoch, start-up and minutes a full training (medians over its processes), and full trainings
    an hour (per repeat the sum over its K processes of 3600 / a training's seconds; the median over
    repeats); `ratio`: new over old, per repeat, the median."""
    figures = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for stage, label in STAGES.items():
            fig: dict = {"model": model, "stage": label}
            per_repeat = {}
            for side, key in (("new", stage), ("old", "old")):
                rs = [r for r in rows if r["model"] == model and r["stage_engine"] == key]
                if not rs:
                    continue
                fig["params"] = rs[0]["params"]
                costs = [full_training(r, stage, sizes) for r in rs]
                hourly: dict[int, float] = {}
                for r, (_, full) in zip(rs, costs, strict=True):
                    hourly[r["repeat"]] = hourly.get(r["repeat"], 0.0) + 3600 / full
                per_repeat[side] = hourly
                fig[side] = {"engine": engine_label(rs[0]), "workers": rs[0]["workers"], "threads": rs[0]["threads"],
                             "epoch_s": statistics.median(e for e, _ in costs),
                             "startup_s": statistics.median(r["startup_s"] for r in rs),
                             "training_min": statistics.median(f for _, f in costs) / 60,
                             "per_hour": statistics.median(hourly.values())}
            if "new" not in fig:  # a row per stage engine measured, the old way beside it
                continue
            both = sorted(set(per_repeat.get("new", {})) & set(per_repeat.get("old", {})))
            if both:
                fig["ratio"] = statistics.median(per_repeat["new"][i] / per_repeat["old"][i] for i in both)
            figures.append(fig)
    return figures


def trainings_table(figures: list[dict]) -> str:
    """The figures as a Markdown table, a row per model and stage, the old way beside the new."""
    def side(f: dict | None, engine: bool) -> list[str]:
        if f is None:
            return ["-"] * (6 if engine else 3)
        nums = [f"{f['epoch_s']:.1f}", f"{f['training_min']:.1f}", f"{f['per_hour']:.1f}"]
        return [f["engine"], f"{f['workers']} x {f['threads']}", nums[0], f"{f['startup_s']:.1f}", *nums[1:]] if engine else nums

    old = next((f["old"] for f in figures if "old" in f), None)
    old_name = f"old ({old['engine']}, {old['workers']} x {old['threads']})" if old else "old"
    head = ["model", "params", "stage", "engine", "workers x threads", "s/epoch", "start-up s", "full training min",
            "trainings/h", f"{old_name} s/epoch", "old full training min", "old trainings/h", "new/old"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---"] * 2 + ["---:"] * 8) + "|"]
    for f in figures:
        cells = [f["model"], f"{f['params']:,}", f["stage"], *side(f.get("new"), True), *side(f.get("old"), False),
                 f"{f['ratio']:.2f}" if "ratio" in f else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for label in STAGES.values():
        ratios = [f["ratio"] for f in figures if f["stage"] == label and "ratio" in f]
        if ratios:
            lines.append(f"{label}: new/old {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- where the time goes


def profile_training(arch: Arch, data: Data, top: int = 12) -> list[dict]:
    """Where a search-stage training's time goes: torch's profiler over one epoch of `data`'s
    training images with the search engine on one thread (a drill worker), after an epoch that
    pays the start-up; the `top` ops by their own time, with their share of all."""
    torch.set_num_threads(1)
    one = arch.with_recipe(epochs=1)
    run = partial(train, partial(build, one), one.recipe, data, engine=Engine(device="cpu"), progress=False)
    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def eval_speeds(arch: Arch, data: Data, batches=(64, 256, 1024, 4096)) -> list[dict]:
    """Evaluation images a second on one thread, in each layout and batch size (fp32, as every
    evaluation runs), and the accuracy each gives: a batch size should change speed, not results."""
    torch.set_num_threads(1)
    x, y, mean, std = data.train.images, data.train.labels, data.mean, data.std
    rows = []
    for layout, fmt in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
        model = build(arch).to(memory_format=fmt).eval()
        evaluate(model, x, y, mean, std, fmt, batches[0])  # first kernels
        for batch in batches:
            t0 = time.perf_counter()
            acc = evaluate(model, x, y, mean, std, fmt, batch)
            rows.append({"layout": layout, "batch": batch, "eval_img_s": len(y) / (time.perf_counter() - t0), "acc": acc})
    return rows


def profile_table(rows: list[dict]) -> str:
    lines = ["| op | own ms | share | calls |", "|---|---:|---:|---:|"]
    return "\n".join(lines + [f"| {r['op']} | {r['self_ms']:.0f} | {100 * r['share']:.1f}% | {r['calls']} |" for r in rows])


def eval_table(rows: list[dict]) -> str:
    batches = list(dict.fromkeys(r["batch"] for r in rows))
    lines = ["| evaluation, fp32, 1 thread | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    for layout in dict.fromkeys(r["layout"] for r in rows):
        speeds = {r["batch"]: r["eval_img_s"] for r in rows if r["layout"] == layout}
        lines.append(f"| {layout} img/s | " + " | ".join(f"{speeds[b]:.0f}" for b in batches) + " |")
    differ = [lay for lay in dict.fromkeys(r["layout"] for r in rows) if len({r["acc"] for r in rows if r["layout"] == lay}) > 1]
    return "\n".join(lines) + (f"\naccuracy differs with the batch size in {', '.join(differ)}" if differ
                               else "\nthe same accuracy at every batch size, in each layout")


if __name__ == "__main__":  # one measurement in its own process (spawn): `python -m budgetnas.search.engine.bench ARGS`
    print(json.dumps(measure(*json.loads(sys.argv[1]))))
