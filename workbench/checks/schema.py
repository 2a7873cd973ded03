"""Schema: every call names a known tool and its arguments validate against its parameters
(jsonschema; arguments the schema does not declare are errors too)."""

from __future__ import annotations

import copy
import difflib

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from workbench.checks.base import CheckContext, calls_of, evidence_item, flag
from workbench.checks.grounding import shown

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


JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
              "array": list, "object": dict}


def _close(value: str, choices: list[str]) -> str | None:
    """The choice nearest to a value in writing (case aside), if any is near."""
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hit[0]] if hit else None


def _converted(value, wanted: str):
    """The value written as the type the schema wants, where that is lossless ('5' -> 5)."""
    try:
        if wanted == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if wanted == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if wanted == "number" and isinstance(value, str):
            return float(value) if "." in value else int(value)
    except ValueError:
        return None
    return None


def what_fits(error) -> str | None:
    """What would fit where a value does not: the allowed value nearest to the one given, the
    value in the wanted type, the declared argument nearest to an unknown one."""
    v = error.validator
    if v == "enum":
        allowed = [str(x) for x in error.validator_value]
        near = _close(str(error.instance), allowed)
        return f"the nearest it allows is {near!r}" if near else None
    if v == "type":
        wanted = error.validator_value
        if isinstance(wanted, str):
            as_wanted = _converted(error.instance, wanted)
            if as_wanted is not None:
                return f"it should be the {wanted} {as_wanted!r}"
            return f"it should be a{'n' if wanted[:1] in 'aeiou' else ''} {wanted}"
        return None
    if v == "additionalProperties":
        declared = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(declared))
        pairs = [(k, _close(k, declared)) for k in extra]
        pairs = [(k, d) for k, d in pairs if d and d not in error.instance]
        if pairs:
            return "; ".join(f"did it mean {d!r} for {k!r}" for k, d in pairs[:2])
        return f"it declares {', '.join(map(repr, declared[:6]))}" if declared else (
            "it takes no arguments")
    return None


ENUM_SHOWN = 6   # a flag lists an enum of at most this many values, else counts them


def _described(error) -> str:
    """`describe` for a flag's sentence, with what would fit; a long enum counted, not listed."""
    fits = what_fits(error)
    said = describe(error)
    if error.validator == "enum" and len(error.validator_value) > ENUM_SHOWN:
        path = ".".join(str(p) for p in error.absolute_path)
        said = (f"{path} = {shown(error.instance)} is not one of the"
                f" {len(error.validator_value)} values it allows")
    return said + (f" ({fits})" if fits else "")


def _problems(errors: list) -> str:
    """The errors of one call for a flag's sentence, missing required arguments in one clause."""
    missing = [repr(e.message.split("'")[1]) for e in errors
               if e.validator == "required" and not e.absolute_path and e.message.count("'") >= 2]
    said = [_described(e) for e in errors
            if not (e.validator == "required" and not e.absolute_path
                    and e.message.count("'") >= 2)]
    if missing:
        said.insert(0, f"required argument{'s' if len(missing) > 1 else ''}"
                    f" {', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing")
    return "; ".join(said)


def run(ctx: CheckContext) -> list[dict]:
    if not ctx.tools:
        return []
    vals = validators(ctx)
    out = []
    for t in ctx.traces:
        for i, m in enumerate(t.messages):
            for name, args in calls_of(m):
                if name not in vals:
                    near = _close(str(name), sorted(vals))
                    out.append(flag(t, i, NAME, "error", f"unknown tool {shown(name)} is called;"
                                    + (f" the nearest tool of the task is {near!r}." if near else
                                       " the call should be to one of the task's tools"
                                       f" (known: {', '.join(sorted(vals)[:8])}"
                                       f"{', ...' if len(vals) > 8 else ''})."),
                                    [evidence_item("schema", f"the task's tools are"
                                                   f" {', '.join(sorted(vals))}")],
                                    pattern=f"unknown-tool:{name}"))   # per tool
                    continue
                if not isinstance(args, dict):
                    out.append(flag(t, i, NAME, "error",
                                    f"{name}: arguments are not a JSON object"
                                    f" ({str(args)[:80]!r}); they should be one.",
                                    pattern=f"not-object:{name}"))
                    continue
                errors = sorted(vals[name].iter_errors(args), key=lambda e: list(e.absolute_path))
                if errors:
                    out.append(flag(t, i, NAME, "error",
                                    f"{name}: " + _problems(errors[:4]) + ".",
                                    [evidence_item("schema", f"the parameters of {name}: "
                                                   + describe(e)) for e in errors[:4]],
                                    pattern=f"schema:{name}." + ",".join(sorted(
                                        {e.validator for e in errors[:4]}))))
    return out



def _schemas(tools: list[dict] | None) -> dict[str, dict]:
    return {fn.get("name"): fn for t in tools or () for fn in [t.get("function", t)]}


def call_problems(tools: list[dict] | None, name: str | None, arguments) -> list[str]:
    """Why one call cannot be saved (empty: it can): a declared tool, arguments that are a
    JSON object valid against its declared parameters. Without any declared tools only the
    shape is checked."""
    if not isinstance(name, str) or not name:
        return ["pick a tool"]
    if not isinstance(arguments, dict):
        return ["arguments must be a JSON object"]
    schemas = _schemas(tools)
    if not schemas:
        return []
    if name not in schemas:
        return [f"unknown tool {name!r} (known: {', '.join(sorted(schemas))})"]
    try:
        validator = Draft202012Validator(declared_arguments(schemas[name]))
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except SchemaError as e:
        return [f"the tool's schema is invalid: {e.message}"]
    return [describe(e) for e in errors]


def label_problems(tools: list[dict] | None, content: str | None,
                   calls: list[dict] | None) -> list[str]:
    """Why an assistant turn's label cannot be saved (empty: it can): the one validation of an
    edit, used by `label edit` and by the app's editor alike.

    `calls` are in the stored form (`{"id", "type", "function": {"name", "arguments"}}`) or
    the short `{"name", "arguments"}`. A turn needs text or at least one call; each call is
    held to `call_problems`; ids, where given, are non-empty strings, unique in the turn."""
    problems: list[str] = []
    calls = calls or []
    if not (content or "").strip() and not calls:
        problems.append("the turn is empty: give it text or at least one call")
    seen_ids: set[str] = set()
    for n, call in enumerate(calls, 1):
        fn = call.get("function", call) if isinstance(call, dict) else {}
        fn = fn if isinstance(fn, dict) else {}
        name = fn.get("name")
        where = f"call {n}" + (f" ({name})" if isinstance(name, str) and name else "")
        cid = call.get("id") if isinstance(call, dict) else None
        if cid is not None:
            if not isinstance(cid, str) or not cid:
                problems.append(f"{where}: its id must be a non-empty string")
            elif cid in seen_ids:
                problems.append(f"{where}: id {cid!r} is used by another call of the turn")
            else:
                seen_ids.add(cid)
        problems.extend(f"{where}: {p}" for p in call_problems(tools, name,
                                                               fn.get("arguments", {})))
    return problems
