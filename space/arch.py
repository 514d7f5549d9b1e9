"""The architecture value: a frozen, JSON-able description of a CNN and its training recipe.

Everything else in budgetnas is a function of an `Arch`: its exact parameter count
(`count.py`), the `nn.Module` (`build.py`), a standalone module (`render.py`) and the
trial attributes a study stores.
"""

from __future__ import annotations

import inspect
import io
import json
import tokenize
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from budgetnas.space.errors import BadInput

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "onecycle", "cosine")
HEADS = ("gap", "flatten")


@dataclass(frozen=True)
class Conv:
    out: int  # output channels
    k: int = 3  # kernel size (square); 1: a 1x1 conv (a transition, or the pointwise half of a separable conv)
    pad: int = 0  # zero padding on each side, pixels
    groups: int = 1  # channel groups; as many as channels in and out: a depthwise conv

    def __post_init__(self):
        whole(self, out=1, k=1, pad=0, groups=1)


@dataclass(frozen=True)
class Pool:
    size: int = 2  # max-pool window and stride, pixels

    def __post_init__(self):
        whole(self, size=1)


def whole(block, **least: int) -> None:
    """A block's sizes are whole numbers at or above their least values (an Arch JSON is user input)."""
    for name, low in least.items():
        v = getattr(block, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise BadInput(f"a {type(block).__name__.lower()} block's {name} must be a whole number >= {low}, "
                           f"but got {v!r}.")


Block = Conv | Pool


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"  # sgd (Nesterov, momentum 0.9) | adam | adamw
    lr: float = 0.05  # peak learning rate
    weight_decay: float = 0.0  # L2 (sgd/adam) or decoupled (adamw) decay
    schedule: str = "onecycle"  # none | step | onecycle | cosine
    step_every: int = 5  # step schedule: epochs between decays
    step_gamma: float = 0.1  # step schedule: multiplicative decay
    epochs: int = 15  # training epochs
    batch_size: int = 128  # images per optimizer step
    rotate: float = 0.0  # augmentation: max random rotation, degrees (uniform +-)
    translate: float = 0.0  # augmentation: max random shift, fraction of image side
    ema: float = 0.0  # decay per step of a moving average of the weights; 0: off, else the average is the model

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(f"optimizer must be one of {OPTIMIZERS}, but got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise BadInput(f"schedule must be one of {SCHEDULES}, but got {self.schedule!r}.")
        if not 0.0 <= self.ema < 1.0:
            raise BadInput(f"ema must be in [0, 1), but got {self.ema}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise BadInput(f"epochs and batch_size must be >= 1, but got {self.epochs}, {self.batch_size}.")


@dataclass(frozen=True)
class Arch:
    blocks: tuple[Block, ...]  # the feature extractor, in order; each Conv is conv->[BN]->ReLU->[dropout]
    head: str = "gap"  # gap: global average pool + linear | flatten: flatten + linear
    bn: bool = True  # BatchNorm after every conv (convs then carry no bias)
    dropout: float = 0.0  # dropout after every conv, probability
    recipe: Recipe = field(default_factory=Recipe)  # how to train it
    image_size: tuple[int, int] = (28, 28)  # input (height, width), pixels; one int: a square
    in_channels: int = 1  # input channels (grey-scale: 1)
    classes: int = 10  # output logits

    def __post_init__(self):
        size = self.image_size
        object.__setattr__(self, "image_size", (size, size) if isinstance(size, int) else tuple(size))
        if len(self.image_size) != 2 or min(self.image_size) < 1 or self.in_channels < 1 or self.classes < 2:
            raise BadInput(f"an Arch's input is (height, width) >= 1 with >= 1 channel and >= 2 classes, but got "
                           f"{self.image_size}, {self.in_channels} channel(s), {self.classes} classes.")
        if self.head not in HEADS:
            raise BadInput(f"head must be one of {HEADS}, but got {self.head!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise BadInput(f"dropout must be in [0, 1), but got {self.dropout}.")
        if not any(isinstance(b, Conv) for b in self.blocks):
            raise BadInput("an Arch needs at least one Conv block.")
        feature_shape(self)  # raises if the image shrinks to nothing

    # -- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = [{"type": type(b).__name__.lower(), **asdict(b)} for b in self.blocks]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Arch:
        d = dict(d)
        kinds = {"conv": Conv, "pool": Pool}
        blocks = []
        for b in d.pop("blocks"):
            b = dict(b)
            kind = b.pop("type")
            if kind not in kinds:
                raise BadInput(f"block type must be one of {tuple(kinds)}, but got {kind!r}.")
            blocks.append(kinds[kind](**b))
        return cls(blocks=tuple(blocks), recipe=Recipe(**d.pop("recipe", {})), **d)

    @classmethod
    def from_json(cls, s: str) -> Arch:
        return cls.from_dict(json.loads(s))

    @classmethod
    def read(cls, path: str | Path) -> Arch:
        """An Arch from a JSON file (`budgetnas export -o FILE.json`, a drill's best.json); BadInput
        with one line if the file cannot be read or holds no Arch."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except OSError as e:
            raise BadInput(f"{path}: cannot read it ({e.strerror or e}).") from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # BadInput is a ValueError
            raise BadInput(f"{path}: not an architecture JSON ({str(e).rstrip('.')}).") from None

    def with_recipe(self, **changes) -> Arch:
        return replace(self, recipe=replace(self.recipe, **changes))


def field_comments(cls) -> dict[str, str]:
    """The comment after each field of dataclass `cls` in its source: a setting's help is stated
    once, where the setting is (flags, exported recipes and reports read it from there)."""
    names, out = {f.name for f in fields(cls)}, {}
    tokens = list(tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT and tok.start[1] > 0:
            line = [t for t in tokens[:i] if t.start[0] == tok.start[0] and t.type in (tokenize.NAME, tokenize.OP)]
            if line and line[0].string in names and len(line) > 1 and line[1].string == ":":
                out[line[0].string] = tok.string.lstrip("# ").strip()
    return out


def feature_shape(arch: Arch) -> tuple[int, int, int]:
    """(channels, height, width) of the feature map that reaches the head; BadInput if it vanishes."""
    c, (h, w) = arch.in_channels, arch.image_size
    for i, b in enumerate(arch.blocks):
        if isinstance(b, Conv):
            if c % b.groups or b.out % b.groups:
                raise BadInput(f"block {i} ({b}): its groups must divide its {c} input and {b.out} output channels.")
            c, h, w = b.out, h + 2 * b.pad - b.k + 1, w + 2 * b.pad - b.k + 1
        else:
            h, w = h // b.size, w // b.size
        if min(h, w) < 1:
            raise BadInput(f"block {i} ({b}) shrinks the {size_text(arch.image_size)} image to nothing.")
    return c, h, w


def size_text(size: tuple[int, int]) -> str:
    """(height, width) as people write it: 28x28px."""
    return f"{size[0]}x{size[1]}px"


RECIPE_HELP = field_comments(Recipe)
