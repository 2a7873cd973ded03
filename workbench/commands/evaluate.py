"""`eval` (score a model turn by turn on the test split) and `chat` (REPL / trace replay).

Model output and trace text are untrusted: everything they contain is printed through
`rich.text.Text` (never parsed as markup), machine output through `print_json`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from workbench.commands.common import (JobRequest, console, err_console, fail, job_options,
                                       print_json, state, user_errors)
from workbench.commands.jobs import run_request
from workbench.core.safe_text import visible

METRIC_ROWS = ("decision", "staged_tool_call", "tool_call_equivalence", "function_match",
               "rouge_l", "text_rouge_l", "llm_as_a_judge")
OVER = {"decision": "n", "rouge_l": "n", "staged_tool_call": "call_turns",
        "tool_call_equivalence": "call_turns", "function_match": "call_turns",
        "text_rouge_l": "text_turns"}   # the turns each mean is over


def _short(text: str | None, n: int = 160) -> Text:
    text = visible((text or "").replace("\n", "⏎"))
    return Text(text if len(text) <= n else text[: n - 1] + "…")


def print_errors(rep: dict, out: Console = console) -> None:
    """Turns without a reply and turns the judge failed on, before any score."""
    m = rep["metrics"]
    if m.get("errors"):
        out.print(Text(f"{m['errors']} of {m.get('turns', m['n'])} turns got no reply (not"
                       " scored): ", style="bold red") + Text(visible(rep.get("error_summary"))))
    if m.get("unjudged"):
        out.print(Text(f"{m['unjudged']} turns unjudged (the judge failed; not in"
                       " llm_as_a_judge): ", style="bold yellow")
                  + Text(visible(rep.get("unjudged_summary"))))


def print_report(rep: dict, out: Console = console) -> None:
    m = rep["metrics"]
    print_errors(rep, out)
    prev = (rep.get("previous") or {}).get("metrics") or {}
    title = Text(f"run {rep['run_id']}: {m['n']} turns scored, model ") + Text(
        visible(rep["model_ref"]))
    table = Table("metric", "mean", "turns", "change", title=title)
    for key in METRIC_ROWS:
        if key in m:
            change = f"{prev[key]:+.4f}" if key in prev else ""
            table.add_row(key, f"{m[key]:.4f}", str(m.get(OVER.get(key, ""), "")), change)
    out.print(table)
    print_floor(rep.get("floor"), m, out)
    if rep.get("previous"):
        out.print(Text(f"change against run {rep['previous']['run_id']} (")
                  + Text(visible(rep["previous"]["model_ref"])) + Text(") on the same selection"))
    if m.get("prompt_tokens"):
        out.print(Text(f"prompt tokens {m['prompt_tokens']}, evaluated {m['evaluated_tokens']}"
                       f" (KV cache reused {m['cached_tokens']}), generated"
                       f" {m['completion_tokens']}, {m['seconds']:.1f} s; errors {m['errors']},"
                       f" malformed calls {m['malformed']}"))
    print_confusion(rep["confusion"], out)
    wt = Table("trace", "turn", "decision", "staged", "text", "rouge", "judge", "reference",
               "prediction", title="worst turns")
    for w in rep["worst"]:
        wt.add_row(str(w["trace_id"]), str(w["message_idx"]), _num(w.get("decision"), "{:.0f}"),
                   _num(w["staged_tool_call"]), _num(w.get("text_rouge_l")),
                   f"{w['rouge_l']:.2f}", _num(w["judge"], "{:.0f}"),
                   _short(w["reference"]), _short(w["prediction"]))
    out.print(wt)


def print_confusion(conf: dict[str, dict[str, int]], out: Console = console) -> None:
    """reference decision (rows) against predicted decision (columns)."""
    cols = sorted({p for row in conf.values() for p in row})
    ct = Table("reference \\ predicted", title="decision confusion (text, or which tools)")
    for c in cols:
        ct.add_column(Text(visible(c)))
    for ref, row in conf.items():
        ct.add_row(Text(visible(ref)), *[str(row.get(c, "")) for c in cols])
    out.print(ct)


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "" if value is None else fmt.format(value)


def print_floor(floor: dict | None, m: dict, out: Console = console) -> None:
    """What the commonest decision, call and text score beside the model's: a mean means little
    without it (`metrics.constant_floor`)."""
    if not floor:
        return
    if "decision" in floor and floor.get("decision_label") is not None:
        out.print(Text("the commonest decision on every turn (") + _short(
            floor["decision_label"], 60) + Text(f") would score decision"
                                                f" {floor['decision']:.4f}"))
    if floor.get("function") is not None:
        gap = m.get("staged_tool_call", 0.0) - floor["staged_tool_call"]
        call = f"{floor['function']} {json.dumps(floor['arguments'], ensure_ascii=False)}"
        out.print(Text("the same call on every call turn (") + _short(call, 100)
                  + Text(f") would score staged {floor['staged_tool_call']:.4f}, function match"
                         f" {floor['function_match']:.4f}: the model is {gap:+.4f} staged from"
                         " it"))
    if floor.get("text_rouge_l") is not None:
        out.print(Text("the commonest text on every text turn (") + _short(floor["text"], 60)
                  + Text(f") would score text_rouge_l {floor['text_rouge_l']:.4f}"))


def print_turn(ref: str | None, completion: Any, staged: float | None,
               out: Console = console, name: str = "staged") -> None:
    """One replayed/chatted turn: predicted call (or malformed text) vs reference."""
    if completion.calls:
        for c in completion.calls:
            out.print(Text("  call ", style="bold cyan")
                      + Text(visible(f"{c['name']}("
                                     f"{json.dumps(c['arguments'], ensure_ascii=False)})")))
    elif completion.malformed:
        out.print(Text("  malformed tool call: ", style="bold red") + Text(visible(completion.text)))
    if completion.error:
        out.print(Text("  error: ", style="bold red") + Text(visible(completion.error)))
    if ref is not None:
        out.print(Text("  reference ", style="bold green") + Text(visible(ref)))
        out.print(Text(f"  {name} score {staged:.2f}", style="bold"))


def _stream_printer(out: Console):
    def on_token(piece: str) -> None:
        out.print(Text(visible(piece)), end="", soft_wrap=True)
    return on_token


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @job_options("eval")
    def eval_cmd(
        ctx: typer.Context,
        job: JobRequest,
        worst: int = typer.Option(10, help="worst turns to show"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Predict every test turn with a model, score it like the TFT benchmark and store the
        run (metrics, confusion matrix, worst turns, change against the previous run). The
        selection defaults to the test split."""
        from workbench.evaluation import report

        row = run_request(ctx, job, quiet=as_json)
        rep = report(state(ctx).db(), row["result"]["run_id"], worst)
        if as_json:
            print_json(rep)
        else:
            print_report(rep)

    @app.command("chat")
    def chat_cmd(
        ctx: typer.Context,
        model: Optional[str] = typer.Option(None, "--model", help="registered model (name or"
                                            " id), GGUF file or `local`, run in-process"),
        endpoint: Optional[str] = typer.Option(None, "--endpoint", help="endpoint name,"
                                               " URL#MODEL, or `local` / `local:MODEL`"
                                               " (in-process)"),
        replay: Optional[int] = typer.Option(None, "--replay", help="trace id to replay turn by"
                                             " turn: reference vs predicted call, staged score"),
        max_tokens: int = typer.Option(256, help="tokens generated per reply at most"),
        n_ctx: Optional[int] = typer.Option(None, help="llama.cpp context size (default: the"
                                            " context the model was trained for, at most"
                                            " 32,768)"),
        threads: int = typer.Option(2, help="llama.cpp threads"),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="seconds to wait for"
                                                " each endpoint reply (default: the endpoint's"
                                                " `timeout`, else 60; one retry)"),
        no_task: bool = typer.Option(False, "--no-task", help="no task system prompt / tools"),
    ) -> None:
        """Chat with a model (tools and task from the store), or replay a stored trace.

        In the REPL: type a message; after a tool call type the tool's result (JSON) or press
        Enter to skip; `/tool TEXT` adds a tool result, `/reset` starts over, `/quit` ends."""
        from workbench.models.chat_backend import ChatSession, open_backend
        from workbench.chat.repl import repl
        from workbench.conversations.view import (conversation, new_conversation_system,
                                                 task_context)

        db = state(ctx).db()
        task = task_context(db)
        tools, system = (None, None) if no_task else (task.tools,
                                                      new_conversation_system(db, task))
        trace_msgs = None
        if replay is not None:
            conv = conversation(db, replay, with_flags=False)
            if conv is None:
                fail(f"no trace {replay}")
            trace_msgs = conv.messages
            if not no_task:   # the trace as the model saw it in training and evaluation
                tools, system = conv.tools, conv.system_prompt
        with user_errors():
            backend = open_backend(model, endpoint, n_ctx=n_ctx, n_threads=threads,
                                   timeout=timeout, db=db)
        if getattr(backend, "template_note", None):
            err_console.print(Text(visible(backend.template_note)))
        session = ChatSession(backend, tools=tools, system=system, max_tokens=max_tokens,
                              message_tools=task.message_tools)
        try:
            if trace_msgs is not None:
                replay_trace(session, trace_msgs)
            else:
                repl(session)
        except Exception as e:  # noqa: BLE001 - one line (keys redacted), never a traceback
            fail(f"the model call failed: {type(e).__name__}: {e}")
        finally:
            backend.close()


def replay_trace(session: Any, messages: list[dict], out: Console = console) -> list[float]:
    """Predict each assistant turn of a trace from its history, show it against the reference,
    then continue with the reference (teacher forcing, like the evaluation)."""
    from workbench.conversations.messages import turn_answer
    from workbench.evaluation.metrics import headline, score_turn

    scores = []
    for m in messages:
        if m["role"] == "assistant":
            out.print(Text("assistant (predicted)> ", style="bold magenta"), end="")
            done = session.generate(_stream_printer(out), append=False)
            out.print()
            ref = turn_answer(m)
            name, score = headline(score_turn(ref, done.text))
            scores.append(score)
            print_turn(ref, done, score, out, name)
        else:
            label = {"tool": "tool result", "user": "user", "system": "system"}[m["role"]]
            out.print(Text(f"{label}> ", style="bold") + Text(visible(m["content"] or "")))
        session.add_message(m)
    if scores:
        out.print(Text(f"mean score {sum(scores) / len(scores):.3f} over {len(scores)} turns"
                       " (staged on call turns, text ROUGE-L on text turns)", style="bold"))
    return scores
