"""Recipe levers on the validation split (never test): one model, several recipe variants,
the same seeds for each, trained exactly as a study's trials are (`search.train.train`,
the engine's `auto`: bf16 and channels last on this CPU).

A variant changes Recipe fields only (`name:field=value,field=value`; `base:` changes none).
Each (variant, seed) run reports the mean and minimum validation accuracy of its last 3
epochs and its last-epoch train accuracy; the summary gives each variant's mean over seeds
and its difference from the first variant, seed by seed.

    python studies/levers/check.py exp4 --val-size 10000 --seeds 0 1 2 --jobs 2 \
        --variant base: --variant b64:batch_size=64 --json studies/levers/exp4-b64.json
    python studies/levers/check.py exp4 --val-split tail --seeds 0 1 --variant base: \
        --json studies/levers/exp4-tail.json
"""

import argparse
import json
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace

import torch

from budgetnas.search.engine.data import VAL_SPLITS, load
from budgetnas.search.engine.train import threads_each, train
from budgetnas.search.engine.verify import load_candidate
from budgetnas.search.study.objective import LAST
from budgetnas.space import Recipe


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    types = {f.name: type(getattr(Recipe(), f.name)) for f in fields(Recipe)}
    changes = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"error: unknown Recipe field {key!r}; known: {sorted(types)}")
        changes[key] = types[key](value)
    return name, changes


def run(target: str, val_size: int, val_split: str, changes: dict, seed: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    cand, data = load_candidate(target), load("mnist", val_size=val_size, val_split=val_split)
    history = train(cand.make_model, replace(cand.recipe, **changes), data, seed=seed, progress=False)
    last = [h["val_acc"] for h in history[-LAST:]]
    return {"seed": seed, "val_last3_mean": statistics.mean(last), "val_last3_min": min(last),
            "train_acc_last": history[-1]["train_acc"], "seconds": sum(h["seconds"] for h in history),
            "history": history}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="a baseline (exp4), an Arch JSON or an exported module")
    ap.add_argument("--val-size", type=int, default=10000)
    ap.add_argument("--val-split", choices=VAL_SPLITS, default="random")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", action="append", required=True, help="name:field=value,... (base: for none)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    variants = dict(parse_variant(v) for v in args.variant)
    jobs = [(name, seed) for name in variants for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {job: pool.submit(run, args.target, args.val_size, args.val_split, variants[job[0]], job[1], threads_each(args.jobs))
                   for job in jobs}
        runs = {job: f.result() for job, f in futures.items()}
    first = next(iter(variants))
    summary = {}
    for name, changes in variants.items():
        means = [runs[name, s]["val_last3_mean"] for s in args.seeds]
        diffs = [m - runs[first, s]["val_last3_mean"] for m, s in zip(means, args.seeds, strict=True)]
        summary[name] = {"changes": changes, "val_last3_mean": statistics.mean(means),
                         "per_seed": means, "diff_per_seed": diffs,
                         "train_acc_last": statistics.mean(runs[name, s]["train_acc_last"] for s in args.seeds),
                         "minutes_per_run": statistics.mean(runs[name, s]["seconds"] for s in args.seeds) / 60}
        print(f"{name:>10}  val last-3 mean {summary[name]['val_last3_mean']:.3f}%  per seed "
              + " ".join(f"{m:.2f}" for m in means) + "  vs " + first + " " + " ".join(f"{d:+.2f}" for d in diffs)
              + f"  train {summary[name]['train_acc_last']:.2f}%  {summary[name]['minutes_per_run']:.1f} min/run")
    with open(args.json, "w") as f:
        json.dump({"target": args.target, "val_size": args.val_size, "val_split": args.val_split, "seeds": args.seeds, "summary": summary,
                   "runs": [{"variant": n, **runs[n, s]} for n, s in jobs]}, f, indent=1)


if __name__ == "__main__":
    main()
