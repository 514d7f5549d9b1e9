"""The search space, written as the code runs (define-by-run), and its inverse `params_of`.

Shape of every sampled model: `stages` stages of 3x3 convs; between stages a 2x2
max-pool, optionally followed by a 1x1 transition conv; the last `s{i}_padded` convs of
a stage pad by 1 (keeping the map's side); in a `s{i}_separable` stage (not the first)
each 3x3 conv is a depthwise 3x3 followed by a 1x1 to its width (MobileNet's separable
conv, about 1/9 of the parameters at equal width). Then a GAP or flatten head. Labels are stable
(`s{stage}_c{conv}`) so trials compare across a study and a baseline can be enqueued as
plain params. Given the data's image size (and a parameter budget), `sample_arch` narrows the
integer ranges it offers so that a draw can be built on that image (and tends to fit the budget);
the labels stay the same.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, fields, replace

import optuna

from .arch import HEADS, OPTIMIZERS, SCHEDULES, Arch, Conv, Pool, Recipe, size_text
from .build import count_params
from .errors import BadInput, ShapeError

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
    label_smoothing: tuple[float, ...] = (0.0,)  # see Recipe.label_smoothing
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
            ("label_smoothing", all(0 <= e < 1 for e in self.label_smoothing), "shares in [0, 1) (0: off)"),
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


def sample_arch(trial: optuna.trial.BaseTrial, space: SpaceConfig = SpaceConfig(), epochs: int = 15, *,
                image_size: tuple[int, int] | int | None = None, budget: int | None = None,
                in_channels: int | None = None, classes: int | None = None) -> Arch:
    """One Arch from the space; `epochs` is the study's fidelity, not a searched knob.

    Without the keywords, the space as it is: the model is for Arch's default input (28x28 grey, 10
    classes), and a draw the data's image cannot hold (it shrinks to nothing) is the caller's to prune.

    `image_size` (and `in_channels`, `classes`: the data's; default 1 and 10) fits the draws to that
    input, and the Arch has it: fewer `stages` where the image is too small for the space's most (each
    stage's input keeps at least 1 px), and each stage's `s{i}_padded` is at least the number that
    keeps the map from vanishing. So every draw can be built. `budget` (parameters) also narrows
    `stages`, `s{i}_convs` and every width (`s{i}_t`, `s{i}_c{j}`) to those that leave room for the
    rest of the model at widths no larger, so draws tend to fit it (see `_Fit`); and it draws `head`
    first (its cost depends on it) -- the same label with the same choices, drawn earlier.

    Labels and which are drawn are the same either way (define-by-run, so a study resumes); only the
    ranges of those integer labels change, with the input and budget (Optuna keeps each trial's own
    range). Categorical choices are never narrowed: Optuna refuses a choice set that changes."""
    fit = None if image_size is None and budget is None else _Fit(space, image_size, in_channels, classes, budget)
    head = None
    if budget is not None:  # the head first: what the rest may cost depends on it
        head = fit.head = trial.suggest_categorical("head", space.head)
    ch = (space.channels[0], space.channels[1])
    blocks: list = []
    stages = _int(trial, "stages", fit.stages() if fit else space.stages)
    for s in range(stages):
        if s > 0:
            blocks.append(Pool())
            if trial.suggest_categorical(f"s{s}_transition", space.transition):
                t = fit.transition(blocks, s, stages) if fit else ch
                blocks.append(Conv(_int(trial, f"s{s}_t", t, space.channel_step), k=1))
        n = _int(trial, f"s{s}_convs", fit.convs(blocks, s, stages) if fit else space.convs)
        widths: list[int] = []
        for i in range(n):
            r = fit.widths(blocks, widths, s, stages, n - i) if fit else ch
            widths.append(_int(trial, f"s{s}_c{i}", r, space.channel_step))
        padded = trial.suggest_int(f"s{s}_padded", *(fit.padded(blocks, widths, s, stages) if fit else (0, n)))
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
    if head is None:
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
        label_smoothing=trial.suggest_categorical("label_smoothing", space.label_smoothing),
        **step,
    )
    shape = {} if fit is None else {"image_size": fit.size, "in_channels": fit.in_channels, "classes": fit.classes}
    return Arch(blocks=tuple(blocks), head=head, bn=bn, dropout=dropout, recipe=recipe, **shape)


class _Fit:
    """The integer ranges `sample_arch` offers for a known input and, perhaps, a budget.

    Shape: `stages` stops where a stage's input would be under 1 px, and a stage pads enough of its
    convs that the later stages still get at least 1 px. Budget: a range keeps the values whose model
    fits when everything not yet drawn is as wide as the width being drawn (or the space's narrowest,
    for a count), with `later` convs in each later stage, the dearer side of each choice still to come
    (a transition, BN rather than a bias, no separable convs), and the map as small as the convs still
    to come can make it (what a flatten head costs; `padded` then keeps a flatten model to a map that
    fits). Where no value fits, the cheapest is offered: the draw is then over budget, as it would
    be without one."""

    def __init__(self, space: SpaceConfig, size, in_channels: int | None, classes: int | None, budget: int | None):
        size = DEFAULT_INPUT.image_size if size is None else size
        self.space, self.budget, self.head = space, budget, None
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.in_channels = DEFAULT_INPUT.in_channels if in_channels is None else in_channels
        self.classes = DEFAULT_INPUT.classes if classes is None else classes
        self.per_out = 2 if True in space.bn else 1  # BN's scale and shift, else a bias
        self.later = space.convs[0]  # convs assumed in a stage whose count is not drawn yet
        self.grid = range(space.channels[0], space.channels[1] + 1, space.channel_step)

    def stages(self) -> IntRange:
        lo, hi = self.space.stages
        hi = max(lo, min(hi, min(self.size).bit_length()))  # side >> (stages - 1) >= 1
        return self._fitting(range(lo, hi + 1), lambda n: self._params([], [], 0, n, self.later, self.grid[0]))

    def convs(self, blocks: list, s: int, stages: int) -> IntRange:
        return self._fitting(range(self.space.convs[0], self.space.convs[1] + 1),
                             lambda n: self._params(blocks, [], s, stages, n, self.grid[0]))

    def transition(self, blocks: list, s: int, stages: int) -> IntRange:
        """The range of stage `s`'s 1x1 transition width (its conv count not drawn yet)."""
        return self._fitting(self.grid, lambda t: self._params(blocks + [Conv(t, k=1)], [], s, stages, self.later, t))

    def widths(self, blocks: list, drawn: list[int], s: int, stages: int, k: int) -> IntRange:
        """The range of the next width in stage `s`, after `drawn` widths there, with `k` convs still
        to draw there (this one included)."""
        return self._fitting(self.grid, lambda w: self._params(blocks, drawn, s, stages, k, w))

    def padded(self, blocks: list, widths: list[int], s: int, stages: int) -> IntRange:
        n = len(widths)
        room = (min(_side(blocks, self.size)) - (1 << (stages - 1 - s))) // 2  # unpadded convs the map affords
        fewest = min(n, max(0, n - room))
        return self._fitting(range(fewest, n + 1), lambda p: self._params(blocks, widths, s, stages, 0,
                                                                          self.grid[0], padded=p))

    def _fitting(self, options: range, params) -> IntRange:
        if self.budget is None:
            return (options[0], options[-1])
        ok = [o for o in options if params(o) <= self.budget] or [min(options, key=params)]
        return (ok[0], ok[-1])

    def _params(self, blocks: list, drawn: list[int], s: int, stages: int, k: int, w: int,
                padded: int | None = None) -> int:
        """Parameters of `blocks` (the model up to stage `s`'s convs), the `drawn` widths of stage `s`
        and `k` more 3x3 convs of width `w` there, the later stages at width `w` (a 1x1 transition
        where one may be drawn, then `later` 3x3 convs), and the head on the map left when `padded`
        of stage `s`'s convs pad (None: as few as the map allows) and no later conv pads that need not."""
        n, c = 0, self.in_channels

        def conv(out: int, k: int = 3, groups: int = 1) -> int:
            return k * k * (c // groups) * out + self.per_out * out

        for b in blocks:
            if isinstance(b, Conv):
                n, c = n + conv(b.out, b.k, b.groups), b.out
        for x in [*drawn, *[w] * k]:
            n, c = n + conv(x), x
        for _ in range(s + 1, stages):
            if True in self.space.transition:
                n, c = n + conv(w, 1), w
            for _ in range(self.later):
                n, c = n + conv(w), w
        if self.head != "flatten":
            return n + c * self.classes
        h, wd = _side(blocks, self.size)
        for j in range(s, stages):
            convs = len(drawn) + k if j == s else self.later
            room = max(0, (min(h, wd) - (1 << (stages - 1 - j))) // 2)
            shrink = 2 * (convs - padded if j == s and padded is not None else min(convs, room))
            h, wd = h - shrink, wd - shrink
            if j < stages - 1:  # the pool
                h, wd = h // 2, wd // 2
        return n + c * self.classes * max(h, 0) * max(wd, 0)


def _side(blocks: list, size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the map after `blocks`."""
    h, w = size
    for b in blocks:
        if isinstance(b, Conv):
            h, w = h + 2 * b.pad - b.k + 1, w + 2 * b.pad - b.k + 1
        else:
            h, w = h // b.size, w // b.size
    return h, w


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
             ema=r.ema, label_smoothing=r.label_smoothing)
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
    for name, d in _sampled(space, params, arch).distributions.items():
        v = params[name]
        if not _contains(d, v):  # a number: clamp into the range, snap to the step
            v = min(max(v, d.low), d.high)
            params[name] = type(v)(d.low + round((v - d.low) / d.step) * d.step) if d.step else v
    try:
        _sampled(space, params, arch)
    except ValueError:  # a stage's conv count moved: the widths of its new convs are missing
        raise BadInput("it cannot be moved into the space without changing its shape.") from None
    return params


def fits(space: SpaceConfig, arch: Arch) -> bool:
    """Whether the space can sample `arch` exactly (every param inside its range or choices)."""
    try:
        return _inside(space, params_of(arch), arch)
    except (BadInput, ValueError):  # not expressible (params_of), or a param or choice FixedTrial refuses
        return False


def _sampled(space: SpaceConfig, params: dict, like: Arch) -> optuna.trial.FixedTrial:
    """The space sampled at `params` for the input and classes of `like` (a model for a 32x32 image
    may be one that would shrink a 28x28 one to nothing); ValueError if a param it asks for is missing."""
    trial = optuna.trial.FixedTrial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FixedTrial warns on out-of-range values; callers check them
        sample_arch(trial, space, like.recipe.epochs, image_size=like.image_size, in_channels=like.in_channels,
                    classes=like.classes)
    return trial


def _inside(space: SpaceConfig, params: dict, like: Arch) -> bool:
    trial = _sampled(space, params, like)
    return all(_contains(d, trial.params[n]) for n, d in trial.distributions.items())


def _contains(d: optuna.distributions.BaseDistribution, value) -> bool:
    try:
        return d._contains(d.to_internal_repr(value))
    except ValueError:  # a categorical value that is not among the choices
        return False


DEFAULT_INPUT = Arch((Conv(2),))  # a placeholder model with Arch's default input (28x28 grey) and classes (10)


def min_params(space: SpaceConfig, like: Arch = DEFAULT_INPUT, *,
               image_size: tuple[int, int] | int | None = None) -> int:
    """Parameters of the smallest model the space can sample (narrowest, shallowest, cheapest head),
    for the input and classes of `like` (default: 28x28 grey, 10 classes), or for `image_size` (with
    `like`'s channels and classes) where given. Its convs pad or not, whichever is smaller and fits
    the image (padding costs no parameters, but leaves a flatten head a larger map)."""
    size = like.image_size if image_size is None else _Fit(space, image_size, None, None, None).size
    c, counts = space.channels[0], []
    stage_counts = range(space.stages[0], space.stages[1] + 1)
    for stages, separable, pad in itertools.product(stage_counts, space.separable, (0, 1)):
        blocks: list = []
        for s in range(stages):
            if s > 0:
                blocks += [Pool()] + ([Conv(c, k=1)] if False not in space.transition else [])
            conv = [Conv(c, pad=pad, groups=c), Conv(c, k=1)] if s > 0 and separable else [Conv(c, pad=pad)]
            blocks += conv * space.convs[0]
        try:
            arch = replace(like, blocks=tuple(blocks), head="gap" if "gap" in space.head else "flatten",
                           bn=False not in space.bn, image_size=size)
        except ShapeError:  # this many stages shrinks the image to nothing
            continue
        counts.append(count_params(arch))
    if not counts:
        raise BadInput(f"no model in the space fits a {size_text(size)} image: even its fewest stages "
                       f"({space.stages[0]}, each after the first halving the image) shrink it to nothing; use larger "
                       "images, or a space with fewer stages (a study's [space] stages)")
    return min(counts)


# ----------------------------------------------------------------------------- storage & study
