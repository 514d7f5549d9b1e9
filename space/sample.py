"""The search space, written as the code runs (define-by-run), and its inverse `params_of`.

Shape of every sampled model: `stages` stages of 3x3 convs; between stages a 2x2
max-pool, optionally followed by a 1x1 transition conv; the last `s{i}_padded` convs of
a stage pad by 1 (keeping the map's side); in a `s{i}_separable` stage (not the first)
each 3x3 conv is a depthwise 3x3 followed by a 1x1 to its width (MobileNet's separable
conv, about 1/9 of the parameters at equal width). Then a GAP or flatten head. Labels are stable
(`s{stage}_c{conv}`) so trials compare across a study and a baseline can be enqueued as
plain params.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, fields, replace

import optuna

from budgetnas.space.arch import HEADS, OPTIMIZERS, SCHEDULES, Arch, Conv, Pool, Recipe, size_text
from budgetnas.space.build import count_params
from budgetnas.space.errors import BadInput

IntRange = tuple[int, int]
FloatRange = tuple[float, float]


@dataclass(frozen=True)
class SpaceConfig:
    """Ranges (inclusive) and choices of every knob. A knob is fixed by a range of one value
    or a single choice. Set from a study file's [space] table."""

    stages: IntRange = (2, 3)  # conv stages, separated by max-pools
    convs: IntRange = (1, 4)  # 3x3 convs per stage
    channels: IntRange = (4, 32)  # channels per conv
    channel_step: int = 2  # channel granularity
    transition: tuple[bool, ...] = (True, False)  # 1x1 conv after each pool?
    bn: tuple[bool, ...] = (True, False)  # BatchNorm after every conv?
    dropout: FloatRange = (0.0, 0.2)  # dropout after every conv
    dropout_step: float = 0.025
    head: tuple[str, ...] = ("gap", "flatten")
    optimizer: tuple[str, ...] = ("sgd", "adam", "adamw")
    lr: FloatRange = (1e-3, 0.3)  # peak learning rate, sampled log-uniform
    weight_decay: tuple[float, ...] = (0.0, 1e-5, 1e-4, 5e-4)
    schedule: tuple[str, ...] = ("none", "step", "onecycle", "cosine")
    step_every: IntRange = (2, 8)  # step schedule: epochs between decays
    step_gamma: tuple[float, ...] = (0.1, 0.3, 0.5)
    batch_size: tuple[int, ...] = (64, 128, 256)
    rotate: FloatRange = (0.0, 15.0)  # degrees
    rotate_step: float = 2.5
    translate: FloatRange = (0.0, 0.1)  # fraction of the image side
    translate_step: float = 0.025
    separable: tuple[bool, ...] = (False,)  # stages after the first: each 3x3 conv a depthwise 3x3 + 1x1?
    ema: tuple[float, ...] = (0.0,)  # weight-average decay per step (0: off); see Recipe.ema
    # Knobs added since the first studies default to off, so a study stored without one meant this.

    def __post_init__(self):
        """Every value checked by its meaning, so a bad [space] is refused before a study exists."""
        problems = [f"[space] {k} must be {why}, but got {list(v) if isinstance(v := getattr(self, k), tuple) else v!r}."
                    for k, ok, why in (
            ("stages", self.stages[0] >= 1, "at least 1 stage"),
            ("convs", self.convs[0] >= 1, "at least 1 conv a stage"),
            ("channels", self.channels[0] >= 1, "at least 1 channel"),
            ("channel_step", self.channel_step >= 1, "a step of at least 1"),
            ("dropout", 0 <= self.dropout[0] and self.dropout[1] < 1, "a probability in [0, 1)"),
            ("dropout_step", self.dropout_step > 0, "a step > 0"),
            ("head", set(self.head) <= set(HEADS), f"choices among {list(HEADS)}"),
            ("optimizer", set(self.optimizer) <= set(OPTIMIZERS), f"choices among {list(OPTIMIZERS)}"),
            ("schedule", set(self.schedule) <= set(SCHEDULES), f"choices among {list(SCHEDULES)}"),
            ("lr", self.lr[0] > 0, "learning rates > 0 (sampled on a log scale)"),
            ("weight_decay", min(self.weight_decay) >= 0, "decays >= 0"),
            ("step_every", self.step_every[0] >= 1, "at least 1 epoch"),
            ("step_gamma", all(0 < g <= 1 for g in self.step_gamma), "decay factors in (0, 1]"),
            ("batch_size", min(self.batch_size) >= 1, "at least 1 image"),
            ("rotate", 0 <= self.rotate[0] and self.rotate[1] <= 180, "degrees in [0, 180]"),
            ("rotate_step", self.rotate_step > 0, "a step > 0"),
            ("translate", 0 <= self.translate[0] and self.translate[1] < 1, "a fraction of the side in [0, 1)"),
            ("translate_step", self.translate_step > 0, "a step > 0"),
            ("ema", all(0 <= e < 1 for e in self.ema), "decays in [0, 1) (0: off)"),
        ) if not ok]
        if problems:
            raise BadInput(problems[0])

    @classmethod
    def from_dict(cls, d: dict) -> SpaceConfig:
        defaults = cls()
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise BadInput(f"unknown [space] keys {sorted(unknown)}; known: {sorted(f.name for f in fields(cls))}.")
        for k, v in d.items():
            like = getattr(defaults, k)
            items, kinds = (v, like) if isinstance(like, tuple) else ([v], [like])
            if isinstance(like, tuple) and (not isinstance(v, list) or not v):
                raise BadInput(f"[space] {k} must be a non-empty list like {list(like)}, but got {v!r}.")
            if not all(_same_kind(x, kinds[0]) for x in items):
                raise BadInput(f"[space] {k} must hold values like {like!r}, but got {v!r}.")
            if k in RANGES and (len(v) != 2 or v[0] > v[1]):
                raise BadInput(f"[space] {k} must be a range [low, high] with low <= high, but got {v!r}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


RANGES = {"stages", "convs", "channels", "dropout", "lr", "step_every", "rotate", "translate"}


def _same_kind(x, like) -> bool:
    """TOML's `0` may stand for `0.0`; a bool is never a number."""
    if isinstance(like, bool) or isinstance(x, bool):
        return isinstance(x, bool) and isinstance(like, bool)
    if isinstance(like, float):
        return isinstance(x, int | float)
    return isinstance(x, type(like))


def _int(trial, name, r: IntRange, step=1):
    return trial.suggest_int(name, r[0], r[1], step=step)


def _float(trial, name, r: FloatRange, step=None, log=False):
    return trial.suggest_float(name, float(r[0]), float(r[1]), step=step, log=log)


def sample_arch(trial: optuna.trial.BaseTrial, space: SpaceConfig = SpaceConfig(), epochs: int = 15) -> Arch:
    """One Arch from the space; `epochs` is the study's fidelity, not a searched knob."""
    ch = (space.channels[0], space.channels[1])
    blocks: list = []
    for s in range(_int(trial, "stages", space.stages)):
        if s > 0:
            blocks.append(Pool())
            if trial.suggest_categorical(f"s{s}_transition", space.transition):
                blocks.append(Conv(_int(trial, f"s{s}_t", ch, space.channel_step), k=1))
        n = _int(trial, f"s{s}_convs", space.convs)
        widths = [_int(trial, f"s{s}_c{i}", ch, space.channel_step) for i in range(n)]
        padded = trial.suggest_int(f"s{s}_padded", 0, n)
        separable = s > 0 and trial.suggest_categorical(f"s{s}_separable", space.separable)
        for i, w in enumerate(widths):
            pad = int(i >= n - padded)
            if separable:  # a depthwise 3x3 on the map's channels, then a 1x1 to the width
                c = next(b.out for b in reversed(blocks) if isinstance(b, Conv))
                blocks += [Conv(c, pad=pad, groups=c), Conv(w, k=1)]
            else:
                blocks.append(Conv(w, pad=pad))
    bn = trial.suggest_categorical("bn", space.bn)
    dropout = _float(trial, "dropout", space.dropout, space.dropout_step)
    head = trial.suggest_categorical("head", space.head)

    schedule = trial.suggest_categorical("schedule", space.schedule)
    step = {}
    if schedule == "step":
        step = {"step_every": _int(trial, "step_every", space.step_every),
                "step_gamma": trial.suggest_categorical("step_gamma", space.step_gamma)}
    recipe = Recipe(
        optimizer=trial.suggest_categorical("optimizer", space.optimizer),
        lr=_float(trial, "lr", space.lr, log=True),
        weight_decay=trial.suggest_categorical("weight_decay", space.weight_decay),
        schedule=schedule,
        epochs=epochs,
        batch_size=trial.suggest_categorical("batch_size", space.batch_size),
        rotate=_float(trial, "rotate", space.rotate, space.rotate_step),
        translate=_float(trial, "translate", space.translate, space.translate_step),
        ema=trial.suggest_categorical("ema", space.ema),
        **step,
    )
    return Arch(blocks=tuple(blocks), head=head, bn=bn, dropout=dropout, recipe=recipe)


def params_of(arch: Arch) -> dict:
    """Trial params that make `sample_arch` return `arch` (with the study's epochs).

    ValueError if the Arch has a shape the space cannot express."""
    stages: list[list] = [[]]
    c = arch.in_channels
    for b in arch.blocks:
        if isinstance(b, Pool):
            if b.size != 2:
                raise BadInput(f"the space only has 2x2 pools, but got {b}.")
            stages.append([])
        else:
            if b.groups > 1 and not b.groups == b.out == c:
                raise BadInput(f"the space's grouped convs are depthwise (groups = channels in = out), but got {b} after {c} channels.")
            stages[-1].append(b)
            c = b.out
    p: dict = {"stages": len(stages)}
    for s, convs in enumerate(stages):
        if s > 0:
            has_t = bool(convs) and convs[0].k == 1
            p[f"s{s}_transition"] = has_t
            if has_t:
                p[f"s{s}_t"] = convs.pop(0).out
            p[f"s{s}_separable"] = any(c.groups > 1 for c in convs)
            if p[f"s{s}_separable"]:
                convs = _unseparated(s, convs)
        pads = [c.pad for c in convs]
        if not convs or any(c.k != 3 or c.groups > 1 for c in convs) or pads != sorted(pads) or set(pads) - {0, 1}:
            raise BadInput(f"stage {s} must be 3x3 convs whose padded ones (pad 1) come last, but got {convs}.")
        p[f"s{s}_convs"] = len(convs)
        p.update({f"s{s}_c{i}": c.out for i, c in enumerate(convs)})
        p[f"s{s}_padded"] = sum(pads)
    r = arch.recipe
    p.update(bn=arch.bn, dropout=arch.dropout, head=arch.head, schedule=r.schedule, optimizer=r.optimizer,
             lr=r.lr, weight_decay=r.weight_decay, batch_size=r.batch_size, rotate=r.rotate, translate=r.translate,
             ema=r.ema)
    if r.schedule == "step":
        p.update(step_every=r.step_every, step_gamma=r.step_gamma)
    return p


def _unseparated(stage: int, convs: list[Conv]) -> list[Conv]:
    """A separable stage's (depthwise, 1x1) pairs -> the convs they stand for (the 1x1's width)."""
    dws, pws = convs[0::2], convs[1::2]
    if len(dws) != len(pws) or any(d.groups == 1 or w.k != 1 or w.groups > 1 for d, w in zip(dws, pws, strict=True)):
        raise BadInput(f"separable stage {stage} must be (depthwise 3x3, 1x1) pairs, but got {convs}.")
    return [Conv(w.out, d.k, d.pad) for d, w in zip(dws, pws, strict=True)]


def params_in(space: SpaceConfig, arch: Arch) -> dict:
    """`params_of(arch)` moved into the space: a number outside its range is clamped (and
    snapped to the step), a choice the space does not offer is replaced when the space fixes
    that knob. So an earlier study's best can warm-start a narrower one. ValueError if the
    shape cannot be expressed, or a knob with several choices lacks the arch's value."""
    params = params_of(arch)
    for name, v in params.items():  # choices first: FixedTrial refuses a choice the space does not offer
        knob = "transition" if name.endswith("_transition") else name
        choices = getattr(space, knob, None)
        if knob not in RANGES and isinstance(choices, tuple) and v not in choices:
            if len(choices) > 1:
                raise BadInput(f"{name}={v!r} is not among the space's choices {list(choices)}.")
            params[name] = choices[0]
    for name, d in _sampled(space, params, arch.recipe.epochs).distributions.items():
        v = params[name]
        if not _contains(d, v):  # a number: clamp into the range, snap to the step
            v = min(max(v, d.low), d.high)
            params[name] = type(v)(d.low + round((v - d.low) / d.step) * d.step) if d.step else v
    try:
        _sampled(space, params, arch.recipe.epochs)
    except ValueError:  # a stage's conv count moved: the widths of its new convs are missing
        raise BadInput("it cannot be moved into the space without changing its shape.") from None
    return params


def fits(space: SpaceConfig, arch: Arch) -> bool:
    """Whether the space can sample `arch` exactly (every param inside its range or choices)."""
    try:
        return _inside(space, params_of(arch), arch.recipe.epochs)
    except ValueError:  # not expressible, or a choice the space does not offer
        return False


def _sampled(space: SpaceConfig, params: dict, epochs: int) -> optuna.trial.FixedTrial:
    """The space sampled at `params`; ValueError if one it asks for is missing."""
    trial = optuna.trial.FixedTrial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FixedTrial warns on out-of-range values; callers check them
        sample_arch(trial, space, epochs)
    return trial


def _inside(space: SpaceConfig, params: dict, epochs: int) -> bool:
    trial = _sampled(space, params, epochs)
    return all(_contains(d, trial.params[n]) for n, d in trial.distributions.items())


def _contains(d: optuna.distributions.BaseDistribution, value) -> bool:
    try:
        return d._contains(d.to_internal_repr(value))
    except ValueError:  # a categorical value that is not among the choices
        return False


DEFAULT_INPUT = Arch((Conv(2),))  # a placeholder model with Arch's default input (28x28 grey) and classes (10)


def min_params(space: SpaceConfig, like: Arch = DEFAULT_INPUT) -> int:
    """Parameters of the smallest model the space can sample (narrowest, shallowest, cheapest head),
    for the input and classes of `like` (default: 28x28 grey, 10 classes)."""
    c, counts = space.channels[0], []
    for stages, separable in itertools.product(range(space.stages[0], space.stages[1] + 1), space.separable):
        blocks: list = []
        for s in range(stages):
            if s > 0:
                blocks += [Pool()] + ([Conv(c, k=1)] if False not in space.transition else [])
            blocks += ([Conv(c, groups=c), Conv(c, k=1)] if s > 0 and separable else [Conv(c)]) * space.convs[0]
        try:
            arch = replace(like, blocks=tuple(blocks), head="gap" if "gap" in space.head else "flatten", bn=False not in space.bn)
        except ValueError:  # this many stages shrinks the image to nothing
            continue
        counts.append(count_params(arch))
    if not counts:
        raise BadInput(f"no model in the space fits a {size_text(like.image_size)} image: {space.to_dict()}")
    return min(counts)


# ----------------------------------------------------------------------------- storage & study
