"""A job kind's spec: what it is, its typed parameters, and the function that runs it.

A spec's ``Params`` is a dataclass whose fields (type, default, ``help`` in the metadata) are the
job's whole vocabulary: the CLI builds its options from them, the app its forms, the pipeline file
its tables, and the job row stores them as JSON. ``run(ctx, selection, params)`` is the job body.
Each feature declares its kinds in its own ``job.py``; :mod:`workbench.jobs.registry` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Generic, TypeVar

from db.queries import TraceFilter
from workbench.jobs.context import JobContext
from workbench.jobs.fields import MAX_NUMBER, Field, fields_of

P = TypeVar("P")


def opt(default: Any, help: str, **choices: Any) -> Any:  # noqa: A002 - the field's help text
    """A Params field with its help text (and, for the forms, its choices)."""
    meta = {"help": help, **choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def at_least(name: str, value: float | None, low: float, *, unset: Any = None,
             high: float | None = None) -> None:
    """Refuse a number below `low` (or above `high`) unless it is the `unset` value."""
    if value is None or value == unset:
        return
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        extra = f" (or {unset})" if unset is not None else ""
        raise ValueError(f"{name} must be {bound}{extra}, not {value}")


def _check_numbers(kind: str, params: Any) -> None:
    for f in fields(params):
        value = getattr(params, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and abs(value) > MAX_NUMBER:
            raise ValueError(f"{kind}: {f.name} is too large ({str(value)[:30]}; at most"
                             f" {MAX_NUMBER})")


def names(value: Any) -> list[str]:
    """`--only a,b --only c` and ["a", "b,c"] alike."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()]


@dataclass(frozen=True)
class JobSpec(Generic[P]):
    kind: str
    description: str
    Params: type[P]
    run: Callable[[JobContext, TraceFilter, P], Any]
    resumable: bool = False                       # picks up where a stopped run ended
    selection_defaults: dict = field(default_factory=dict)
    in_app: bool = True                           # offered in the app's jobs panel
    takes_selection: bool = True                  # False: the job reads no traces (import)

    def make_params(self, data: Any = None) -> P:
        if isinstance(data, self.Params):
            params = data
        else:
            data = dict(data or {})
            known = {f.name for f in fields(self.Params)}  # type: ignore[arg-type]
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(f"{self.kind}: unknown parameter {', '.join(unknown)}"
                                 f" (known: {', '.join(sorted(known)) or 'none'})")
            params = self.Params(**data)
        _check_numbers(self.kind, params)
        check = getattr(params, "validate", None)
        if check is not None:
            check()
        return params

    def make_selection(self, data: Any = None) -> TraceFilter:
        if isinstance(data, TraceFilter):
            return data
        return TraceFilter.from_dict({**self.selection_defaults, **(data or {})})

    def dump_params(self, params: P) -> dict:
        return asdict(params)  # type: ignore[call-overload]

    def fields(self) -> list[Field]:
        """The parameters' fields: name, type, default, help, choices (CLI, forms, files)."""
        return fields_of(self.Params)
