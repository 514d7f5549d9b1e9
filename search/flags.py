"""Command-line flags made from a config dataclass: a setting's name, type, default and help are
stated once, in its field (the help is the field's comment, read by `field_comments`)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from ..space.arch import field_comments


def _base(hint):
    """int for `int | None`, and so on; tuple for `tuple[str, ...]`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def add_fields(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), rename: dict | None = None,
               required: tuple[str, ...] = ()) -> None:
    """One flag per field of `cls` (`--field-name`, or `rename[field]`), default None so that a
    flag not given leaves the config file's value or the field's default; the help names that
    default."""
    helps = {k: v for base in reversed(cls.__mro__) if dataclasses.is_dataclass(base) for k, v in field_comments(base).items()}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + (rename or {}).get(f.name, f.name).replace("_", "-")
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = helps.get(f.name, "").replace("%", "%%")
        kw = {"dest": f.name, "default": None,
              "help": text if f.name in required or "default" in text else
              f"{text} (default: {'none' if default is None else default})"}
        kind = _base(hints[f.name])
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif kind is tuple:
            p.add_argument(flag, nargs="+", type=str, **kw)
        else:
            p.add_argument(flag, type=kind, required=f.name in required, **kw)


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` that were given as flags."""
    out = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}
