"""One vocabulary of typed fields: a job's parameters and the trace selection, described once.

A field is read from a dataclass: its type (``int``, ``float``, ``str``, ``bool``, a list of
``str`` or ``int``, a ``Literal`` of choices, each possibly optional), its default, and the
``help``, ``choices``, ``cli`` (the option's name, when it is not the field's) and ``off`` (the
negative switch of an optional yes/no) in its metadata. The CLI builds its options from it
(``workbench.commands.common``), the app its form fields (``workbench.jobs.forms``), and the
pipeline file checks its values with it (``workbench.pipeline``): what a field accepts is
decided here, the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Literal, Union

BASES = ("str", "int", "float", "bool", "list[str]", "list[int]")
MAX_NUMBER = 2**53   # no parameter needs more: a larger number is a typo (JSON loses it, SQLite overflows)
_NOUN = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
         "list[str]": "a list of strings", "list[int]": "an integer or a list of integers"}


@dataclass(frozen=True)
class Field:
    name: str                        # the dataclass field
    base: str                        # one of BASES
    optional: bool                   # None allowed (an empty input means None)
    default: Any
    help: str = ""
    choices: tuple | None = None
    cli: str = ""                    # the option name without dashes (default: the name)
    off: str | None = None           # an optional yes/no's negative switch ("unflagged")

    @property
    def option(self) -> str:
        """The command-line flag: `--max-length`."""
        return "--" + (self.cli or self.name).replace("_", "-")

    @property
    def keys(self) -> tuple[str, ...]:
        """The names a file may use for it: the option's (as on the command line) and the
        field's own."""
        cli = (self.cli or self.name).replace("-", "_")
        return (cli,) if cli == self.name else (cli, self.name)

    def describe(self) -> str:
        noun = _NOUN[self.base]
        if self.choices:
            noun = "one of " + ", ".join(map(str, self.choices))
        return noun

    def check(self, value: Any) -> Any:
        """A value from a file (TOML, JSON) as the field's type; ValueError says what it must
        be. A string for a list field is a comma list, as on the command line."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"must be {self.describe()}, not nothing")
        if self.base == "list[str]" and isinstance(value, str):
            return value                      # a comma list: the Params split it
        if self.base == "list[int]" and _fits(value, "int"):
            value = [value]                   # one id for a list of ids
        if not _fits(value, self.base):
            raise ValueError(f"must be {self.describe()}, not {_show(value)}")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_NUMBER:
                raise ValueError(f"is too large ({str(v)[:30]}; at most {MAX_NUMBER})")
        if self.choices and value not in self.choices:
            raise ValueError(f"must be {self.describe()}, not {_show(value)}")
        return value

    def parse(self, text: str | None) -> Any:
        """Typed value of a text input (a form field); empty means None where that is allowed,
        a list is a comma list."""
        text = "" if text is None else str(text).strip()
        if self.base.startswith("list"):
            items = [t.strip() for t in text.split(",") if t.strip()]
            if not items and self.optional and self.default is None:
                return None
            return [self._scalar(t, self.base[5:-1]) for t in items]
        if not text:
            if self.optional:
                return None
            if self.base == "str":
                return ""
            raise ValueError(f"{self.name}: {self.describe()} is needed")
        if self.base == "bool":
            if text.lower() in ("yes", "true", "1", "on"):
                return True
            if text.lower() in ("no", "false", "0", "off"):
                return False
            raise ValueError(f"{self.name}: {text!r} is not yes or no")
        return self._scalar(text, self.base)

    def _scalar(self, text: str, base: str) -> Any:
        if base == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{self.name}: {text!r} is not a whole number") from None
        if base == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{self.name}: {text!r} is not a number") from None
        return text


def _show(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


def _fits(value: Any, base: str) -> bool:
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "str":
        return isinstance(value, str)
    return isinstance(value, list) and all(_fits(v, base[5:-1]) for v in value)


def _base(hint: Any) -> tuple[str, bool, tuple | None]:
    """(base, optional, choices) of a type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        base, _, choices = _base(rest[0] if len(rest) == 1 else str)
        return base, type(None) in args, choices
    if origin is Literal:
        return ("int" if all(isinstance(a, int) for a in args) else "str"), False, tuple(args)
    if origin is list:
        return ("list[int]" if args and args[0] is int else "list[str]"), False, None
    name = getattr(hint, "__name__", "str")
    return (name if name in BASES else "str"), False, None


def fields_of(cls: type) -> list[Field]:
    """The fields of a Params dataclass or of the selection, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        base, optional, choices = _base(hints[f.name])
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        meta = f.metadata
        choices = tuple(meta["choices"]) if meta.get("choices") else choices
        out.append(Field(f.name, base, optional or default is None, default,
                         meta.get("help", ""), choices, meta.get("cli", ""), meta.get("off")))
    return out


def check_values(fields: list[Field], values: dict[str, Any]) -> dict[str, Any]:
    """Values given by name (a file's table) -> typed values by field name. KeyError names an
    unknown key; ValueError is `(key, message)` for the first value that does not fit."""
    by_key = {k: f for f in fields for k in f.keys}
    out = {}
    for key, value in values.items():
        f = by_key.get(key)
        if f is None:
            raise KeyError(key)
        try:
            out[f.name] = f.check(value)
        except ValueError as e:
            raise ValueError(key, str(e)) from None
    return out
