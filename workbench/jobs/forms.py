"""The fields of a job form, without Textual: which widget each parameter gets and how its
value reads back as a typed value.

The app's job form (`workbench.app.screens.job_form`) is built from the one field vocabulary
(`workbench.jobs.fields`), so a field accepts in the app what it accepts on the command line
and in a pipeline file; the job's own checks (`JobSpec.make_params`, `TraceFilter`) still have
the last word when the job is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.queries import TraceFilter
from workbench.jobs.fields import Field, fields_of

YES, NO = "yes", "no"


@dataclass(frozen=True)
class FormField(Field):
    """A field (`workbench.jobs.fields.Field`) with the widget that edits it."""

    @classmethod
    def of(cls, f: Field) -> FormField:
        return cls(**{k: getattr(f, k) for k in Field.__dataclass_fields__})

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

    def read(self, raw: Any) -> Any:
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
            return self.parse(str(raw))
        return self.parse(raw)


def param_fields(spec: Any) -> list[FormField]:
    """A job kind's parameters as form fields."""
    return [FormField.of(f) for f in fields_of(spec.Params)]


def selection_fields() -> list[FormField]:
    """The selection's fields (`TraceFilter`), each optional: empty means "any"."""
    return [FormField.of(f) for f in fields_of(TraceFilter)]


def read_form(form: list[FormField], raw: dict[str, Any]) -> tuple[dict, dict[str, str]]:
    """Typed values of the fields `raw` holds, and the error of each field that does not read
    (empty optional fields are left out, so the kind's own default applies)."""
    values, errors = {}, {}
    for f in form:
        if f.name not in raw:
            continue
        try:
            value = f.read(raw[f.name])
        except ValueError as e:
            errors[f.name] = str(e)
            continue
        if value is not None or not f.optional or f.default is not None:
            values[f.name] = value
    return values, errors
