"""What the app's chat tester and replay need from the store and the models (no Textual here).

A model to talk to is a registered model (name or id: its newest GGUF), a GGUF path, a
configured endpoint, `URL#MODEL` or the built-in `local`; the conversation gets the system
prompt the stored conversations have (`conversation_view.new_conversation_system`: their own,
else the task's), the task's tools and message-only tools from the one conversation view, so it
sees what training and evaluation saw; a replay runs under the trace's own system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from db.traces import calls_named, tool_result_after
from workbench.core import safe_json
from workbench.models.chat_backend import ChatSession, Completion
from workbench.committee.members import tool_validators, validate_call
from workbench.conversations.view import Conversation, new_conversation_system, task_context
from workbench.conversations.messages import turn_answer
from workbench.evaluation.metrics import headline, score_turn
from workbench.conversations.toolcalls import parse_tool_call


def model_choices(db: Database) -> list[tuple[str, str]]:
    """(label, reference) of everything one can chat with: registered GGUFs (newest first),
    configured endpoints, and the built-in local model."""
    from db.models import list_models
    from workbench.models.endpoints import endpoints

    out = [(f"model {m['name']} (#{m['id']})", str(m["id"]))
           for m in reversed(list_models(db)) if m["kind"] == "gguf"]
    try:
        out += [(f"endpoint {name} ({ep.model})", f"endpoint:{name}")
                for name, ep in endpoints().items()]
    except ValueError:
        pass   # a broken config file: the CLI says why; the app still offers the rest
    out.append(("local (SmolLM2-135M, in-process)", "endpoint:local"))
    return out


def open_session(db: Database, ref: str, *, n_threads: int = 1, max_tokens: int = 256,
                 timeout: float | None = None, with_task: bool = True) -> ChatSession:
    """A chat session with the model `ref` (see `model_choices`; a GGUF path works too)."""
    from workbench.models.chat_backend import open_backend

    if ref.startswith("endpoint:"):
        backend = open_backend(None, ref.partition(":")[2], n_threads=n_threads,
                               timeout=timeout, db=db)
    else:
        backend = open_backend(ref, None, n_threads=n_threads, db=db)
    task = task_context(db)
    return ChatSession(backend, tools=task.tools if with_task else None,
                       system=new_conversation_system(db, task) if with_task else None,
                       max_tokens=max_tokens,
                       message_tools=task.message_tools)


def call_problems(calls: list[dict], tools: list[dict] | None) -> list[str | None]:
    """For each call of a reply, why it does not fit the tool schemas (None: it does)."""
    validators = tool_validators(tools)
    return [validate_call(c, validators)[1] for c in calls]


def similar_result(db: Database, call: dict) -> str | None:
    """A stored tool result that answered a call to the same tool with the most argument values
    in common (a result that found something before an empty one): a realistic reply to type
    back to the model."""
    name = call.get("name")
    args = call.get("arguments") or {}
    best, best_score = None, (-1, False)
    for tid, idx, raw in calls_named(db, name, limit=2000):
        try:
            stored = safe_json.loads(raw) if isinstance(raw, str) else (raw or {})
        except ValueError:
            continue
        score = sum(1 for k, v in args.items()
                    if isinstance(stored, dict) and str(stored.get(k, "")).lower()
                    == str(v).lower())
        if score < best_score[0]:
            continue
        result = tool_result_after(db, tid, idx)
        if result is None:
            continue
        content = result[0]
        found = (score, bool(safe_json.loads(content)) if _is_json(content) else bool(content))
        if found > best_score:
            best, best_score = content, found
    return best


def _is_json(text: str | None) -> bool:
    try:
        safe_json.loads(text or "")
        return True
    except ValueError:
        return False


@dataclass
class ReplayTurn:
    """One assistant turn of a replayed trace: the reference against the model's prediction."""

    index: int
    reference: str                 # the reference answer (its text and calls)
    predicted: str
    score: float                   # staged on a call turn, the text's ROUGE-L on a text turn
    differing: list[str]           # argument names whose values differ (or "function")
    completion: Completion | None = None
    score_name: str = "staged"     # which of the two `score` is (`metrics.headline`)


def differing_fields(reference: str, predicted: str) -> list[str]:
    ref, pred = parse_tool_call(reference), parse_tool_call(predicted)
    if ref is None or pred is None:
        return [] if ref is pred else ["call"]
    if ref["name"] != pred["name"]:
        return ["function"]
    a, b = ref["arguments"] or {}, pred["arguments"] or {}
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def replay_turn(session: ChatSession, conv: Conversation, index: int,
                on_token: Any = None) -> ReplayTurn:
    """Predict assistant turn `index` of `conv` from the reference history before it (teacher
    forcing, as the evaluation does), under the conversation's own system prompt."""
    session.system = conv.system_prompt
    session.messages[:] = conv.messages[:index]
    done = session.generate(on_token, append=False)
    reference = turn_answer(conv.messages[index])
    name, score = headline(score_turn(reference, done.text))
    return ReplayTurn(index, reference, done.text, score,
                      differing_fields(reference, done.text), done, name)
