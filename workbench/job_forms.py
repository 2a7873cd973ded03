"""The fields of a job form, without Textual: which widget each parameter gets, how its text
reads back as a typed value, and the selection's fields.

The app's job form (`workbench.screens.job_form`) is built from these, so what a field accepts
is decided here once, unit-tested, and the same for every job kind; the job's own checks
(`JobSpec.make_params`, `TraceFilter`) still have the last word when the job is stored.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from db.queries import LABEL_STATUSES, ORIGINS, SPLITS, TraceFilter

SELECTION_CHOICES = {"split": list(SPLITS), "origin": list(ORIGINS),
                     "status": list(LABEL_STATUSES)}
SELECTION_HELP = {
    "split": "train | test | unassigned", "origin": "imported | synthetic",
    "status": "label status: original | revised | proposed",
    "tool": "some assistant turn calls this function", "check": "carries a flag of this check",
    "flagged": "carries an error flag (yes) or none (no)", "has_revisions": "has revisions",
    "excluded": "excluded from training", "text": "full-text search (words, \"phrases\", prefix*)",
    "source": "part of the source file name", "trace_ids": "exactly these traces (comma list)",
    "limit": "the first N selected traces"}
YES, NO = "yes", "no"


@dataclass(frozen=True)
class FormField:
    """One parameter: `base` is str, int, float, bool, list[str] or list[int]; `optional`
    when None is allowed (an empty input then means None)."""

    name: str
    base: str
    optional: bool
    default: Any
    help: str = ""
    choices: tuple | None = None

    @classmethod
    def from_type(cls, name: str, type_text: str, default: Any, help: str = "",  # noqa: A002
                  choices: Any = None) -> FormField:
        parts = [p.strip() for p in str(type_text).split("|")]
        optional = "None" in parts or default is None
        base = next((p for p in parts if p != "None"), "str").replace("List", "list")
        if base not in ("str", "int", "float", "bool", "list[str]", "list[int]"):
            base = "str"
        return cls(name, base, optional, default, help or "",
                   tuple(choices) if choices else None)

    @property
    def widget(self) -> str:
        """switch (a plain bool), select (choices, or a yes/no/any bool), or input."""
        if self.base == "bool":
            return "select" if self.optional else "switch"
        return "select" if self.choices else "input"

    @property
    def options(self) -> list[str]:
        """A select's values (None, the blank, stands for "any" where the field is optional)."""
        if self.base == "bool":
            return [YES, NO]
        return [str(c) for c in self.choices or ()]

    def to_widget(self, value: Any) -> Any:
        """The widget's initial value for `value`: text, a bool, or an option (None: blank)."""
        if self.widget == "switch":
            return bool(value)
        if self.widget == "select":
            if value is None:
                return None
            return (YES if value else NO) if self.base == "bool" else str(value)
        if value is None:
            return ""
        if self.base.startswith("list"):
            return ", ".join(str(v) for v in value)
        return str(value)

    def parse(self, raw: Any) -> Any:
        """The typed value of a widget's value; ValueError names the field and what is wrong."""
        if self.widget == "switch":
            return bool(raw)
        if self.widget == "select":
            if raw is None:
                if self.optional:
                    return None
                raise ValueError(f"{self.name}: pick one of {', '.join(self.options)}")
            if self.base == "bool":
                return raw == YES
            return self._scalar(str(raw), self.base)
        text = "" if raw is None else str(raw).strip()
        if self.base.startswith("list"):
            item = self.base[5:-1]
            items = [t.strip() for t in text.split(",") if t.strip()]
            if not items and self.optional and self.default is None:
                return None
            return [self._scalar(t, item) for t in items]
        if not text:
            if self.optional:
                return None
            if self.base == "str":
                return ""
            raise ValueError(f"{self.name}: a {_NOUN[self.base]} is needed")
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


_NOUN = {"int": "whole number", "float": "number", "str": "text"}


def param_fields(spec: Any) -> list[FormField]:
    """A job kind's parameters (`JobSpec.describe_params`) as form fields."""
    return [FormField.from_type(d["name"], d["type"], d["default"], d["help"], d["choices"])
            for d in spec.describe_params()]


def selection_fields() -> list[FormField]:
    """The selection's fields (`TraceFilter`), each optional: empty means "any"."""
    out = []
    for f in fields(TraceFilter):
        default = f.default if f.default is not MISSING else None
        out.append(FormField.from_type(f.name, str(f.type), default, SELECTION_HELP.get(f.name, ""),
                                       SELECTION_CHOICES.get(f.name)))
    return out


def read_form(form: list[FormField], raw: dict[str, Any]) -> tuple[dict, dict[str, str]]:
    """Typed values of the fields `raw` holds, and the error of each field that does not read
    (empty optional fields are left out, so the kind's own default applies)."""
    values, errors = {}, {}
    for f in form:
        if f.name not in raw:
            continue
        try:
            value = f.parse(raw[f.name])
        except ValueError as e:
            errors[f.name] = str(e)
            continue
        if value is not None or not f.optional or f.default is not None:
            values[f.name] = value
    return values, errors
