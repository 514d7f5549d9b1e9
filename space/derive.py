"""A narrower space derived from the best trials of a broader one (the drill's Narrow stage).

What the best trials agree on is fixed; what they disagree on keeps the values they used
(choices) or the span they cover (numbers), with a margin, and twice the margin on a side
where the very best trial sits on the edge of that span (the optimum may lie beyond it).
Spans may grow past the broad space's bounds only up to `LIMITS`, the values that still mean
something. The result is a plain `SpaceConfig`, written out as a readable `[space]` table.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace

from .sample import RANGES, SpaceConfig

# How far a numeric knob may be widened past the broad space, whatever the trials say.
LIMITS = {
    "stages": (1, 6),
    "convs": (1, 8),
    "channels": (1, 512),
    "dropout": (0.0, 0.5),
    "lr": (1e-5, 3.0),
    "step_every": (1, 100),
    "rotate": (0.0, 45.0),
    "translate": (0.0, 0.25),
}
STRUCTURE = {"stages", "convs"}  # integer knobs read as choices: no margin, only the span the best used...
DEEPEN = "convs"  # ...but one conv more where the very best uses the most: a low fidelity favours shallow models


def knob_values(params: dict) -> dict[str, list]:
    """One trial's params (as `sample_arch` names them) -> the values it used of each [space] knob."""
    out: dict[str, list] = {}
    for name, v in params.items():
        stage_knob = re.fullmatch(r"s\d+_(\w+)", name)
        knob = name
        if stage_knob:
            part = stage_knob.group(1)
            if part == "padded":
                continue  # sampled within each stage, not a [space] knob
            knob = "channels" if re.fullmatch(r"t|c\d+", part) else part  # s{s}_t, s{s}_c{i}: widths
        out.setdefault(knob, []).append(v)
    return out


def derive_space(broad: SpaceConfig, best: list[dict]) -> SpaceConfig:
    """The space around `best` (trial params, best first; at least one)."""
    if not best:
        raise ValueError("deriving a space needs at least one trial, but got none.")
    used: dict[str, list] = {}
    for params in best:
        for knob, values in knob_values(params).items():
            used.setdefault(knob, []).extend(values)
    top = knob_values(best[0])
    changes = {}
    for f in fields(SpaceConfig):
        knob = f.name
        if knob not in used:  # never sampled by these trials (e.g. step_every without a step schedule)
            continue
        values = used[knob]
        if knob in RANGES:
            changes[knob] = _span(knob, values, top.get(knob, []), broad)
        else:  # choices: those the best used, in the broad space's order, then any it did not offer
            offered = getattr(broad, knob)
            changes[knob] = (tuple(c for c in offered if c in values)
                             + tuple(v for v in dict.fromkeys(values) if v not in offered))
    return replace(broad, **changes)


def _span(knob: str, values: list, top: list, broad: SpaceConfig) -> tuple:
    lo, hi = min(values), max(values)
    limit_lo, limit_hi = LIMITS[knob]
    if knob in STRUCTURE:  # what the best used; a deeper stage where the very best is deepest (Explore's
        # few epochs favour fast-converging models: the 7k drills' spaces stopped at 3 convs a stage, while
        # the 6,960-parameter model that passes, studies/mnist-tail, has 4 in its second)
        return (lo, hi + 1 if knob == DEEPEN and hi in top and hi < limit_hi else hi)
    if lo == hi:  # agreed on: fixed
        return (lo, hi)
    step = {"channels": broad.channel_step, "dropout": broad.dropout_step, "rotate": broad.rotate_step,
            "translate": broad.translate_step, "step_every": 1}.get(knob)
    at_lo, at_hi = (2 if lo in top else 1), (2 if hi in top else 1)
    if knob == "lr":  # log scale: a margin of a quarter of the span in log units, at least x1.25
        m = max(math.log(1.25), 0.25 * math.log(hi / lo))
        return (float(f"{max(limit_lo, lo * math.exp(-m * at_lo)):.3g}"),
                float(f"{min(limit_hi, hi * math.exp(m * at_hi)):.3g}"))
    m = math.ceil(max(step, 0.25 * (hi - lo)) / step) * step  # whole steps: stay on the knob's grid
    new_lo = lo - step * min(m * at_lo / step, math.floor((lo - limit_lo) / step + 1e-9))
    new_hi = hi + step * min(m * at_hi / step, math.floor((limit_hi - hi) / step + 1e-9))
    if isinstance(lo, int):
        return (int(new_lo), int(new_hi))
    return (round(new_lo, 6), round(new_hi, 6))


def to_toml(space: SpaceConfig | dict, comment: str = "") -> str:
    """`space` (or its knobs as a record keeps them) as a `[space]` table a person can read, edit and
    pass to `budgetnas search --config`."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()] + ["[space]"]
    for k, v in (space.to_dict() if isinstance(space, SpaceConfig) else space).items():
        lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)
