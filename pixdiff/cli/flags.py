"""`pixdiff train`'s flags, generated from the config dataclasses (one source of truth).

Every field of every section of ``TrainConfig`` (model, data, loss, optim, run) becomes one flag:

- name: the field's ``metadata["flag"]``, else its name with ``_`` → ``-``;
- type from the annotation: ``int`` / ``float`` / ``str``; ``bool`` → ``--x`` / ``--no-x``;
  ``Literal[...]`` → choices; ``tuple[T, T]`` → two values (``tuple[T, ...]``: one or more);
  ``dict`` → repeated ``KEY=VALUE`` with VALUE read as JSON (a bare word is a string);
  ``X | None`` → X, and the word ``none`` gives None;
- help: ``metadata["help"]`` plus the default (unless the help already states it);
- grouped by section in ``--help``.

A flag that is not typed leaves no attribute on the namespace (``default=SUPPRESS``), so
``typed_overrides`` returns exactly what the user typed and a config file (``--config``) or a
resumed run's saved config stays the base. A field whose annotation has no flag type is an
error when the parser is built, so a new config field cannot silently lack its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

from pixdiff.cli._common import help_text
from pixdiff.errors import PixdiffError

__all__ = ["ConfigFlag", "config_flags", "add_config_flags", "typed_overrides"]

_DEST = "config:"  # namespace attributes of generated flags: "config:<section>.<field>"


@dataclass(frozen=True)
class ConfigFlag:
    section: str  # "model", "data", ...
    field: str  # the dataclass field name
    flag: str  # without the leading --
    kind: str  # "value" | "bool" | "tuple" | "dict"
    type: Callable[[str], Any] | None
    choices: tuple | None
    nargs: int | str | None
    help: str

    @property
    def dest(self) -> str:
        return f"{_DEST}{self.section}.{self.field}"

    @property
    def option(self) -> str:
        return f"--{self.flag}"


def _fmt_default(v) -> str:
    if v is None or v == {} or v == []:
        return "none"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (tuple, list)):
        return " ".join(map(str, v))
    return str(v)


def _nullable(base: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(s: str):
        return None if s.lower() in ("none", "null") else base(s)

    convert.__name__ = base.__name__  # argparse names the type in "invalid int value: 'x'"
    return convert


def _flag_of(section: str, f: dataclasses.Field, tp) -> ConfigFlag:
    name = f.metadata.get("flag") or f.name.replace("_", "-")
    nullable = False
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{section}.{f.name}: no flag type for {tp}")
        tp, nullable = rest[0], True
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    conv, choices, nargs = None, None, None
    if tp is bool:
        kind = "bool"
    elif origin is Literal:
        kind, choices, conv = "value", targs, type(targs[0])
    elif origin is tuple and targs:
        kind, conv = "tuple", targs[0]
        if len(targs) == 2 and targs[1] is Ellipsis:
            nargs = "+"
        elif all(a is targs[0] for a in targs):
            nargs = len(targs)
        else:
            raise TypeError(f"{section}.{f.name}: no flag type for mixed tuple {tp}")
    elif tp is dict or origin is dict:
        kind = "dict"
    elif tp in (int, float, str):
        kind, conv = "value", tp
    else:
        raise TypeError(f"{section}.{f.name}: no flag type for {tp}; extend pixdiff.cli.flags")
    if nullable and conv is not None:
        conv = _nullable(conv)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    h = f.metadata.get("help", "")
    if "default" not in h.lower():
        h += f" (default: {_fmt_default(default)})"
    if nullable and kind == "value":
        h += "; 'none' unsets it"
    return ConfigFlag(section, f.name, name, kind, conv, choices, nargs, h)


def config_flags(config_cls=None) -> list[ConfigFlag]:
    """One ``ConfigFlag`` per field of each section of ``config_cls`` (default ``TrainConfig``), in
    declaration order."""
    if config_cls is None:
        from pixdiff.config import TrainConfig as config_cls
    out = []
    sections = typing.get_type_hints(config_cls)
    for sec in dataclasses.fields(config_cls):
        kls = sections[sec.name]
        hints = typing.get_type_hints(kls)
        out.extend(_flag_of(sec.name, f, hints[f.name]) for f in dataclasses.fields(kls))
    names = [c.flag for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TypeError(f"two config fields want the same flag: {', '.join(dup)}; set metadata['flag'] on one")
    return out


def add_config_flags(parser: argparse.ArgumentParser, config_cls=None) -> dict[str, argparse._ArgumentGroup]:
    """Add every config flag to ``parser``, one argument group per section; returns the groups."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for c in config_flags(config_cls):
        g = groups.get(c.section)
        if g is None:
            g = groups[c.section] = parser.add_argument_group(
                f"{c.section} settings", f"the [{c.section}] section of OUT/config.json")
        kw: dict[str, Any] = {"dest": c.dest, "default": argparse.SUPPRESS, "help": help_text(c.help)}
        if c.kind == "bool":
            g.add_argument(c.option, action=argparse.BooleanOptionalAction, **kw)
        elif c.kind == "dict":
            g.add_argument(c.option, action="append", metavar="KEY=VALUE", **kw)
        else:
            metavar = c.flag.upper().replace("-", "_") if c.choices is None else None
            g.add_argument(c.option, type=c.type, choices=c.choices, nargs=c.nargs, metavar=metavar, **kw)
    return groups


def key_values(flag: str, items: list[str]) -> dict[str, Any]:
    """``--FLAG KEY=VALUE`` items as a dict; VALUE is read as JSON, a bare word as itself."""
    out = {}
    for kv in items:
        key, sep, val = kv.partition("=")
        if not sep or not key:
            raise PixdiffError(f"--{flag} takes KEY=VALUE (got {kv!r})")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val  # a bare word: the string itself
    return out


def typed_overrides(args: argparse.Namespace, config_cls=None) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` of the config flags the user typed (nothing else)."""
    ns = vars(args)
    out: dict[str, dict[str, Any]] = {}
    for c in config_flags(config_cls):
        if c.dest not in ns:
            continue
        v = ns[c.dest]
        if c.kind == "dict":
            v = key_values(c.flag, v)
        elif c.kind == "tuple":
            v = tuple(v)
        out.setdefault(c.section, {})[c.field] = v
    return out
