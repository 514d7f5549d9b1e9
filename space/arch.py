"""The architecture value: a frozen, JSON-able description of a CNN and its training recipe.

Everything else in budgetnas is a function of an `Arch`: its exact parameter count
(`count.py`), the `nn.Module` (`build.py`), a standalone module (`render.py`) and the
trial attributes a study stores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from space.errors import BadInput

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "onecycle", "cosine")
HEADS = ("gap", "flatten")


@dataclass(frozen=True)
class Conv:
    out: int  # output channels
    k: int = 3  # kernel size (square); 1: a 1x1 conv (a transition, or the pointwise half of a separable conv)
    pad: int = 0  # zero padding on each side, pixels
    groups: int = 1  # channel groups; as many as channels in and out: a depthwise conv


@dataclass(frozen=True)
class Pool:
    size: int = 2  # max-pool window and stride, pixels


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
    image_size: int = 28  # input height = width, pixels
    in_channels: int = 1  # input channels (grey-scale: 1)
    classes: int = 10  # output logits

    def __post_init__(self):
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

    def with_recipe(self, **changes) -> Arch:
        return replace(self, recipe=replace(self.recipe, **changes))


def feature_shape(arch: Arch) -> tuple[int, int]:
    """(channels, side) of the feature map that reaches the head; ValueError if it vanishes."""
    c, side = arch.in_channels, arch.image_size
    for i, b in enumerate(arch.blocks):
        if isinstance(b, Conv):
            if c % b.groups or b.out % b.groups:
                raise BadInput(f"block {i} ({b}): its groups must divide its {c} input and {b.out} output channels.")
            c, side = b.out, side + 2 * b.pad - b.k + 1
        else:
            side = side // b.size
        if side < 1:
            raise BadInput(f"block {i} ({b}) shrinks the {arch.image_size}px image to nothing.")
    return c, side
