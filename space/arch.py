"""The architecture value: a frozen, JSON-able description of a CNN and its training recipe.

Everything else in budgetnas is a function of an `Arch`: its exact parameter count
(`count.py`), the `nn.Module` (`build.py`), a standalone module (`render.py`) and the
trial attributes a study stores.

An Arch JSON is user input, so every value is checked when made: by its field's type hint and the
bounds declared beside the field (`within`), in one place (`check`); `Arch.from_dict` also refuses
unknown and missing keys. Each failure is a one-line BadInput naming the field.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import math
import tokenize
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from .errors import BadInput, ShapeError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "onecycle", "cosine")
HEADS = ("gap", "flatten")


@dataclass(frozen=True)
class Bounds:
    """Where a field's values must lie, beyond its type: an interval (either end open or absent) or a
    set of choices. For a tuple field, each of its items. Declared beside the field with `within`."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False  # low itself is out
    open_high: bool = False  # high itself is out
    among: tuple = ()  # the only values allowed, when given

    def holds(self, v) -> bool:
        if self.among:
            return v in self.among
        return ((self.low is None or (v > self.low if self.open_low else v >= self.low))
                and (self.high is None or (v < self.high if self.open_high else v <= self.high)))

    def __str__(self) -> str:
        if self.among:
            return f"one of {list(self.among)}"
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


def within(default=MISSING, *, ge=None, gt=None, le=None, lt=None, among: tuple = ()):
    """A dataclass field (`default`, or none: required) whose values `check` holds to these bounds."""
    bounds = Bounds(low=ge if gt is None else gt, high=le if lt is None else lt, open_low=gt is not None,
                    open_high=lt is not None, among=tuple(among))
    return field(default=default, metadata={"bounds": bounds})


def check(obj) -> None:
    """Every field of the dataclass `obj` is of its declared type and within its declared `Bounds`,
    else BadInput naming the first that is not. By type: int, a whole number (not a bool); float, a
    finite number (an int will do, a bool will not); bool, True or False only; str, a string; a tuple
    type, a tuple of such items; a class (or union of classes), an instance. An Arch JSON is user input:
    this is what stands between it and a module, a trial or a training run."""
    cls = type(obj)
    for f, hint in _hints(cls):
        v, bounds = getattr(obj, f.name), f.metadata.get("bounds")
        if not _fits(v, hint, bounds):
            raise BadInput(f"{cls.__name__}.{f.name} must be {_what(hint, bounds)}, but got {v!r}.")


@functools.cache
def _hints(cls) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in fields(cls))


SCALARS = {  # type -> (is a value of it, what to call it)
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _fits(v, hint, bounds: Bounds | None) -> bool:
    if typing.get_origin(hint) is tuple:
        if not isinstance(v, tuple):
            return False
        items = typing.get_args(hint)
        items = items[:1] * len(v) if items[1:] == (Ellipsis,) else items
        return len(v) == len(items) and all(_fits(x, h, bounds) for x, h in zip(v, items))
    if isinstance(hint, types.UnionType):
        return any(_fits(v, h, bounds) for h in typing.get_args(hint))
    if hint in SCALARS:
        return SCALARS[hint][0](v) and (bounds is None or bounds.holds(v))
    return isinstance(v, hint)


def _what(hint, bounds: Bounds | None) -> str:
    """What a value of `hint` within `bounds` is, in words: "a finite number in [0, 1)"."""
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if items[1:] == (Ellipsis,):
            return f"a tuple, each item {_what(items[0], bounds)}"
        if len(set(items)) == 1:
            return f"{len(items)} values, each {_what(items[0], bounds)}"
        return "(" + ", ".join(_what(h, bounds) for h in items) + ")"
    if isinstance(hint, types.UnionType):
        return " or ".join(_what(h, bounds) for h in typing.get_args(hint))
    if hint in SCALARS:
        return str(bounds) if bounds and bounds.among else SCALARS[hint][1] + (f" {bounds}" if bounds else "")
    return hint.__name__


@dataclass(frozen=True)
class Conv:
    out: int = within(ge=1)  # output channels
    k: int = within(3, ge=1)  # kernel size (square); 1: a 1x1 conv (a transition, or the pointwise half of a separable conv)
    pad: int = within(0, ge=0)  # zero padding on each side, pixels
    groups: int = within(1, ge=1)  # channel groups; as many as channels in and out: a depthwise conv

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class Pool:
    size: int = within(2, ge=1)  # max-pool window and stride, pixels

    def __post_init__(self):
        check(self)


Block = Conv | Pool


@dataclass(frozen=True)
class Recipe:
    optimizer: str = within("sgd", among=OPTIMIZERS)  # sgd (Nesterov, momentum 0.9) | adam | adamw
    lr: float = within(0.05, gt=0)  # peak learning rate
    weight_decay: float = within(0.0, ge=0)  # L2 (sgd/adam) or decoupled (adamw) decay
    schedule: str = within("onecycle", among=SCHEDULES)  # none | step | onecycle | cosine
    step_every: int = within(5, ge=1)  # step schedule: epochs between decays
    step_gamma: float = within(0.1, gt=0, le=1)  # step schedule: multiplicative decay
    epochs: int = within(15, ge=1)  # training epochs
    batch_size: int = within(128, ge=1)  # images per optimizer step
    rotate: float = within(0.0, ge=0, le=180)  # augmentation: max random rotation, degrees (uniform +-)
    translate: float = within(0.0, ge=0, lt=1)  # augmentation: max random shift, fraction of image side
    ema: float = within(0.0, ge=0, lt=1)  # decay per step of a moving average of the weights; 0: off, else the average is the model
    label_smoothing: float = within(0.0, ge=0, lt=1)  # loss: this share of each label's weight spread over all classes; 0: off

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class Arch:
    blocks: tuple[Block, ...]  # the feature extractor, in order; each Conv is conv->[BN]->ReLU->[dropout]
    head: str = within("gap", among=HEADS)  # gap: global average pool + linear | flatten: flatten + linear
    bn: bool = True  # BatchNorm after every conv (convs then carry no bias)
    dropout: float = within(0.0, ge=0, lt=1)  # dropout after every conv, probability
    recipe: Recipe = field(default_factory=Recipe)  # how to train it
    image_size: tuple[int, int] = within((28, 28), ge=1)  # input (height, width), pixels; one int: a square
    in_channels: int = within(1, ge=1)  # input channels (grey-scale: 1)
    classes: int = within(10, ge=2)  # output logits

    def __post_init__(self):
        size, blocks = self.image_size, self.blocks
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        object.__setattr__(self, "image_size", tuple(size) if isinstance(size, list) else size)
        object.__setattr__(self, "blocks", tuple(blocks) if isinstance(blocks, list) else blocks)
        check(self)
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
        """An Arch from its JSON object, which is user input: BadInput naming the key or value if a key
        is unknown or a required one missing, or a value is not of its field's type and bounds (`check`)."""
        d = dict(keys_of(cls, d, "an Arch"))
        kinds = {"conv": Conv, "pool": Pool}
        if not isinstance(d["blocks"], list):
            raise BadInput(f"blocks must be a list of conv and pool blocks, but got {d['blocks']!r}.")
        blocks = []
        for i, b in enumerate(d.pop("blocks")):
            kind = b.get("type") if isinstance(b, dict) else None
            if not isinstance(kind, str) or kind not in kinds:
                raise BadInput(f"blocks[{i}] must be an object whose type is one of {list(kinds)}, but got {b!r}.")
            b = keys_of(kinds[kind], {k: v for k, v in b.items() if k != "type"}, f"blocks[{i}] (a {kind})")
            try:
                blocks.append(kinds[kind](**b))
            except BadInput as e:
                raise BadInput(f"blocks[{i}]: {e}") from None
        return cls(blocks=tuple(blocks), recipe=Recipe(**keys_of(Recipe, d.pop("recipe", {}), "recipe")), **d)

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
        except (BadInput, ValueError, TypeError, KeyError, AttributeError) as e:  # a field out of its domain; bad JSON
            raise BadInput(f"{path}: not an architecture JSON ({str(e).rstrip('.')}).") from None

    def with_recipe(self, **changes) -> Arch:
        return replace(self, recipe=replace(self.recipe, **changes))


def keys_of(cls, d, where: str) -> dict:
    """`d`, a JSON value, as keyword arguments of the dataclass `cls`: BadInput naming the keys unless it
    is an object with no key that `cls` lacks and every key that `cls` requires."""
    if not isinstance(d, dict):
        raise BadInput(f"{where} must be a JSON object, but got {d!r}.")
    names = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise BadInput(f"{where} has unknown key(s) {unknown}; known: {names}.")
    missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise BadInput(f"{where} must have the key(s) {missing}, but got only {list(d)}.")
    return d


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
                raise ShapeError(f"block {i} ({b}): its groups must divide its {c} input and {b.out} output channels.")
            c, h, w = b.out, h + 2 * b.pad - b.k + 1, w + 2 * b.pad - b.k + 1
        else:
            h, w = h // b.size, w // b.size
        if min(h, w) < 1:
            raise ShapeError(f"block {i} ({b}) shrinks the {size_text(arch.image_size)} image to nothing.")
    return c, h, w


def size_text(size: tuple[int, int]) -> str:
    """(height, width) as people write it: 28x28px."""
    return f"{size[0]}x{size[1]}px"


RECIPE_HELP = field_comments(Recipe)
