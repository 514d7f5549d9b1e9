"""The paired check behind this study: in one training run, score on the validation split
(never test) the raw model, exponential moving averages of its weights and BatchNorm
statistics at three decays, and the raw model with "precise BN" (statistics recomputed on
10,000 clean training images). Same run, same weights: the differences are not seed noise.

It predates `Recipe.ema`: the averages here are torch's AveragedModel at a fixed decay,
without the warm-up the product uses. Training is `search.train`'s loop (fp32, eager).

    python studies/mnist-7k-ema/paired_check.py studies/mnist-7k/trial125.json 0 out.json
    # also run: trial125.json seed 1, best.json (trial 21) seed 0; each prints its last-3 summary
"""

import copy
import json
import math
import sys
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from budgetnas.search.engine.data import load
from budgetnas.search.engine.loop import augment, evaluate, make_optimizer, make_schedule, to_unit
from budgetnas.search.engine.verify import load_candidate

DECAYS = (0.998, 0.999, 0.9995)


def precise_bn(model, images, mean, std, n=10000):
    """A copy of `model` whose BatchNorm statistics are the plain average over `n` clean images."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, n, 1000):
            model((to_unit(images[i : i + 1000]) - mean) / std)
    return model


def main(target: str, seed: int, out: str) -> None:
    torch.set_num_threads(1)
    cand, data = load_candidate(target), load("mnist", val_size=5000)
    r = cand.recipe
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = cand.make_model()
    averages = {d: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True) for d in DECAYS}
    opt, steps = make_optimizer(model, asdict(r)), math.ceil(len(data.train) / r.batch_size)
    sched = make_schedule(opt, asdict(r), steps)
    x_all, y_all = data.train.images, data.train.labels
    history = []
    for epoch in range(1, r.epochs + 1):
        model.train()
        order = torch.randperm(len(y_all), generator=gen)
        for i in range(steps):
            idx = order[i * r.batch_size : (i + 1) * r.batch_size]
            x = augment(to_unit(x_all[idx]), r.rotate, r.translate, gen)
            loss = F.cross_entropy(model((x - data.mean) / data.std), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for a in averages.values():
                a.update_parameters(model)
        scored = {"raw": model, "pbn": precise_bn(model, x_all, data.mean, data.std)}
        scored |= {f"ema{d}": a.module for d, a in averages.items()}
        history.append({"epoch": epoch, **{k: evaluate(m, data.val.images, data.val.labels, data.mean, data.std) for k, m in scored.items()}})
        print(json.dumps(history[-1]), flush=True)
    last3 = history[-3:]
    summary = {k: {"mean": round(sum(h[k] for h in last3) / 3, 3), "min": min(h[k] for h in last3)}
               for k in history[0] if k != "epoch"}
    print(json.dumps(summary))
    with open(out, "w") as f:
        json.dump({"target": target, "seed": seed, "history": history, "last3": summary}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
