"""Arch -> a standalone Python module (torch + standard library only) that a person can read,
retrain and verify without budgetnas installed.

The class is written out layer by layer in the same order `build` creates them, so for a
given seed `Net()` starts from exactly the same weights as `build(arch)`. The training loop
(search/engine/loop.py) and the data reader (search/engine/read.py) go in verbatim: the module trains with the
code `budgetnas verify` trains it with, so its per-epoch numbers are verify's, seed for seed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict
from pathlib import Path

from ...space.arch import RECIPE_HELP, Arch, Conv, feature_shape, size_text
from ...space.build import count_params
from ...space.errors import BadInput

HERE = Path(__file__).parent


def verbatim(name: str) -> str:
    """A module of this package without its docstring and imports (the template states those)."""
    source = (HERE / name).read_text()
    nodes = ast.parse(source).body
    i = int(bool(nodes) and isinstance(nodes[0], ast.Expr) and isinstance(nodes[0].value, ast.Constant))
    while i < len(nodes) and isinstance(nodes[i], (ast.Import, ast.ImportFrom)):
        i += 1
    return "\n".join(source.splitlines()[nodes[i - 1].end_lineno:]).strip("\n")


def _layers(arch: Arch) -> tuple[list[str], list[str]]:
    """Lines of __init__ and of forward, with the feature-map side in the comments."""
    init, fwd = [], []
    c, (h, w), n_conv, n_pool, depthwise_before = arch.in_channels, arch.image_size, 0, 0, False
    for b in arch.blocks:
        if isinstance(b, Conv):
            n_conv += 1
            new = (h + 2 * b.pad - b.k + 1, w + 2 * b.pad - b.k + 1)
            groups = f", groups={b.groups}" if b.groups > 1 else ""
            parts = [f"nn.Conv2d({c}, {b.out}, {b.k}, padding={b.pad}{groups}, bias={not arch.bn})"]
            parts += [f"nn.BatchNorm2d({b.out})"] if arch.bn else []
            parts += ["nn.ReLU()"] + ([f"nn.Dropout({arch.dropout})"] if arch.dropout > 0 else [])
            kind = f"{b.k}x{b.k} {'depthwise ' if b.groups > 1 else ''}conv"
            if b.k == 1:
                kind = "1x1 pointwise conv" if depthwise_before else "1x1 transition"
            depthwise_before = b.groups > 1
            init.append(f"        # {kind}: {c} -> {b.out} channels, {size_text((h, w))} -> {size_text(new)}")
            init.append(f"        self.conv{n_conv} = nn.Sequential(")
            init += [f"            {part}," for part in parts] + ["        )"]
            fwd.append(f"        x = self.conv{n_conv}(x)")
            c, (h, w) = b.out, new
        else:
            n_pool += 1
            init.append(f"        # max-pool: {size_text((h, w))} -> {size_text((h // b.size, w // b.size))}")
            init.append(f"        self.pool{n_pool} = nn.MaxPool2d({b.size})")
            fwd.append(f"        x = self.pool{n_pool}(x)")
            h, w = h // b.size, w // b.size
    c, h, w = feature_shape(arch)
    if arch.head == "gap":
        init.append(f"        # head: global average pool, then {c} -> {arch.classes} logits")
        init.append(f"        self.head = nn.Linear({c}, {arch.classes}, bias=False)")
        fwd.append("        x = F.adaptive_avg_pool2d(x, 1).flatten(1)")
    else:
        init.append(f"        # head: flatten {c}x{h}x{w}, then -> {arch.classes} logits")
        init.append(f"        self.head = nn.Linear({c * h * w}, {arch.classes}, bias=False)")
        fwd.append("        x = x.flatten(1)")
    fwd.append("        return self.head(x)")
    return init, fwd


def render(arch: Arch, provenance: dict) -> str:
    """The module's source. `provenance` lines (study, trial, date, budget, val accuracy...)
    go into its docstring as `key: value`."""
    init, fwd = _layers(arch)
    recipe = "\n".join(f"    {json.dumps(k)}: {json.dumps(v)},  # {docstring_text(RECIPE_HELP[k])}"
                       for k, v in asdict(arch.recipe).items())
    prov = "\n".join(f"{docstring_text(k)}: {docstring_text(v)}" for k, v in provenance.items())
    h, w = arch.image_size
    return TEMPLATE.format(
        params=count_params(arch),
        shape=f"{h}x{w} images with {arch.in_channels} channel{'s' if arch.in_channels > 1 else ''}",
        input=(arch.in_channels, h, w),
        classes=arch.classes,
        provenance=prov,
        init="\n".join(init),
        forward="\n".join(fwd),
        recipe=recipe,
        loop=verbatim("loop.py"),  # format arguments are not parsed again: no braces to double
        read=verbatim("read.py"),
    )


def docstring_text(value) -> str:
    """`value` as text that cannot end the module's docstring or start an escape: a study name,
    a path or any text a storage hands us is data, never code. Every string the template
    receives from outside passes through here; numbers and the recipe go in as `repr`/JSON."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return "".join(c if c.isprintable() or c == "\n" else f"\\x{ord(c):02x}" for c in text)


TEMPLATE = '''"""A {params:,}-parameter CNN for {shape}, {classes} classes, exported by budgetnas.

{provenance}

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

PARAMS = {params}  # trainable parameters
INPUT = {input}  # (channels, height, width) of the images it takes
CLASSES = {classes}

RECIPE = {{
{recipe}
}}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
{init}

    def forward(self, x):
{forward}


# ----------------------------------------------------------------------------- training: budgetnas's search/engine/loop.py
{loop}


# ----------------------------------------------------------------------------- data: budgetnas's search/engine/read.py
{read}


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
            raise SystemExit(f"error: --threads must be at least 1, but got {{args.threads}}")
        torch.set_num_threads(args.threads)
    try:
        train, test, _ = read(args.data)
    except DataError as e:
        raise SystemExit(f"error: {{e}}") from None
    if tuple(train[0].shape[1:]) != INPUT or int(train[1].max()) + 1 != CLASSES:
        raise SystemExit(f"error: {{args.data}}: images {{tuple(train[0].shape[1:])}} with {{int(train[1].max()) + 1}} "
                         f"classes, but this model takes {{INPUT}} with {{CLASSES}}")
    mean, std = channel_stats(train[0])
    print(f"{{PARAMS}} parameters, seed {{args.seed}}")

    def show(r):
        print(f"epoch {{r['epoch']:2d}}  loss {{r['train_loss']:.4f}}  train {{r['train_acc']:.2f}}%  "
              f"test {{r['test_acc']:.2f}}%  {{r['seconds']:.1f}}s", flush=True)

    history = fit(Net, {{**RECIPE, "epochs": args.epochs}}, train, {{"test": test}}, mean, std, seed=args.seed,
                  device=args.device, on_epoch=show)
    if args.history:
        Path(args.history).write_text(json.dumps(history, indent=1) + "\\n")
    return history


if __name__ == "__main__":
    main()
'''


def render_file(arch_json: str | Path) -> str:
    """The module of an Arch JSON file; its docstring carries NAME.provenance.json beside it, where
    there is one (where the Arch came from: study, trial, validation score, dates)."""
    arch, beside = Arch.read(arch_json), Path(arch_json).with_suffix(".provenance.json")
    provenance = {}
    if beside.is_file():
        try:
            provenance = json.loads(beside.read_text())
        except (OSError, ValueError) as e:
            raise BadInput(f"{beside}: cannot read it as JSON ({e}).") from None
        if not isinstance(provenance, dict) or not all(isinstance(v, str) for v in provenance.values()):
            raise BadInput(f"{beside}: must be a JSON object of text lines, like {{\"Study\": \"mnist, trial 4\"}}.")
    return render(arch, provenance)
