"""Schema: every call names a known tool and its arguments validate against its parameters
(jsonschema; arguments the schema does not declare are errors too)."""

from __future__ import annotations

import copy

from jsonschema import Draft202012Validator

from workbench.checks.base import CheckContext, calls_of, evidence_item, flag

NAME = "schema"


def declared_arguments(fn: dict) -> dict:
    """A copy of a tool's parameter schema that admits only the arguments it declares (a tool
    without parameters takes none): what `check`, a committee member's answer and a teacher's
    call are held to."""
    schema = copy.deepcopy(fn.get("parameters") or {"type": "object", "properties": {}})
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def validators(ctx: CheckContext) -> dict[str, Draft202012Validator]:
    if "schema.validators" not in ctx.cache:
        out = {name: Draft202012Validator(declared_arguments(fn))
               for name, fn in ctx.tools.items()}
        ctx.cache["schema.validators"] = out
    return ctx.cache["schema.validators"]


def describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown argument{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}"
    if v == "required":
        return error.message.replace("is a required property", "is missing (required)")
    if v == "enum":
        return f"{path} = {error.instance!r} is not one of {error.validator_value}"
    if v == "type":
        return f"{path} = {error.instance!r} is not of type {error.validator_value}"
    return f"{path + ': ' if path else ''}{error.message}"


def run(ctx: CheckContext) -> list[dict]:
    if not ctx.tools:
        return []
    vals = validators(ctx)
    out = []
    for t in ctx.traces:
        for i, m in enumerate(t.messages):
            for name, args in calls_of(m):
                if name not in vals:
                    out.append(flag(t, i, NAME, "error", f"unknown tool {name!r}"
                                    f" (known: {', '.join(sorted(vals))})",
                                    [evidence_item("schema", f"the task's tools are"
                                                   f" {', '.join(sorted(vals))}")]))
                    continue
                if not isinstance(args, dict):
                    out.append(flag(t, i, NAME, "error",
                                    f"{name}: arguments are not a JSON object: {str(args)[:80]!r}"))
                    continue
                errors = sorted(vals[name].iter_errors(args), key=lambda e: list(e.absolute_path))
                if errors:
                    out.append(flag(t, i, NAME, "error",
                                    f"{name}: " + "; ".join(describe(e) for e in errors[:4]),
                                    [evidence_item("schema", f"the parameters of {name}: "
                                                   + describe(e)) for e in errors[:4]]))
    return out
