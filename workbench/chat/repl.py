"""The `workbench chat` REPL: lines typed go to the model as user turns; slash commands drive it.

| command | what it does |
|---|---|
| `/tool TEXT` | TEXT is the result of the model's pending tool call (refused when none is pending) |
| `/reset` | clear the conversation (system prompt and tools stay) |
| `/history` | the prompt exactly as the model sees it: the rendered messages, system prompt and tools |
| `/quit` | end (also `/exit`, Ctrl-D) |
| `/help` | this list |

Any other line starting with `/` is an error, never sent; `//text` sends `/text`. Model output,
tool names and echoed input are untrusted: printed as `rich.text.Text` (never markup) with
control characters spelled out (`\\x1b`).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

from workbench.core.safe_text import visible

COMMANDS = (("/tool TEXT", "send TEXT as the result of the model's pending tool call"),
            ("/reset", "clear the conversation (system prompt and tools stay)"),
            ("/history", "show the prompt exactly as the model sees it"),
            ("/quit", "end the chat (also /exit or Ctrl-D)"),
            ("/help", "show these commands"))
KNOWN = ", ".join(c for c, _ in COMMANDS)
PROMPTS = {"user": "you> ", "tool": "tool result (JSON; Enter to skip)> "}


def _read(prompt: str) -> str | None:
    try:
        return input(prompt)
    except (EOFError, KeyboardInterrupt):
        return None


def _error(out: Console, message: str | Text) -> None:
    out.print(Text("error: ", style="bold red") + (message if isinstance(message, Text)
                                                   else Text(message)), soft_wrap=True)


def _info(out: Console, message: str) -> None:
    out.print(Text(message, style="dim"), soft_wrap=True)


def pending_tool_calls(session: Any) -> list[dict]:
    """The model's last turn's calls that wait for a result (message-only tools excluded: the
    store's, learned from the data or configured, see `task_context`)."""
    return session.awaits_result(session.pending_calls())


def prompt_text(session: Any) -> str:
    """What the model is given for its next reply: the backend's rendered prompt (the project
    chat template, system prompt and tools included), or for an OpenAI-compatible endpoint the
    request's messages and tools as JSON."""
    render = getattr(session.backend, "prompt_text", None)
    if render is not None:
        return render(session.messages, session.tools, session.system)
    from workbench.models.chat_backend import _for_endpoint, _system_and_messages

    msgs, system = _system_and_messages(session.messages, session.system)
    payload: dict[str, Any] = {"messages": (
        [{"role": "system", "content": system}] if system is not None else []) + [
        _for_endpoint(m) for m in msgs]}
    if session.tools:
        payload["tools"] = list(session.tools)
    return json.dumps(payload, ensure_ascii=False, indent=2)


def _print_help(out: Console) -> None:
    for cmd, what in COMMANDS:
        out.print(Text(f"  {cmd:<12} {what}"))
    out.print(Text("  any other line is sent to the model; start it with // to send a line"
                   " beginning with /"))


def repl(session: Any, out: Console | None = None) -> None:
    """Read lines until /quit or end of input; each non-command line gets a model reply."""
    if out is None:
        from workbench.commands.common import console as out
    _info(out, "type a message; /help lists the commands")
    while True:
        line = _read(PROMPTS["user"])
        if line is None:
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("//"):
            session.add_user(line.lstrip()[1:])
            _reply(session, out)
            continue
        if not text.startswith("/"):
            session.add_user(line)
            _reply(session, out)
            continue
        cmd, _, arg = text.partition(" ")
        if cmd in ("/quit", "/exit"):
            return
        if cmd == "/help":
            _print_help(out)
        elif cmd == "/reset":
            n = len(session.messages)
            session.messages.clear()
            _info(out, f"conversation cleared ({n} message{'s' if n != 1 else ''});"
                  " the system prompt and tools stay")
        elif cmd == "/history":
            out.print(Text(visible(prompt_text(session))), soft_wrap=True)
        elif cmd == "/tool":
            if not pending_tool_calls(session):
                _error(out, "no tool call is pending: /tool answers the model's last tool call;"
                       " nothing sent")
            elif not arg.strip():
                _error(out, "usage: /tool TEXT (the tool's result, e.g. JSON)")
            else:
                session.add_tool_result(arg)
                _reply(session, out)
        else:
            _error(out, Text("unknown command ") + Text(visible(cmd))
                   + Text(f" (known: {KNOWN}); nothing sent"))


def _stream_printer(out: Console):
    def on_token(piece: str) -> None:
        out.print(Text(visible(piece)), end="", soft_wrap=True)
    return on_token


def _print_completion(out: Console, done: Any) -> None:
    if done.calls:
        for c in done.calls:
            out.print(Text("  call ", style="bold cyan") + Text(visible(
                f"{c['name']}({json.dumps(c['arguments'], ensure_ascii=False)})")),
                soft_wrap=True)
    elif done.malformed:
        out.print(Text("  malformed tool call: ", style="bold red") + Text(visible(done.text)),
                  soft_wrap=True)
    if done.error:
        out.print(Text("  error: ", style="bold red") + Text(visible(done.error)),
                  soft_wrap=True)


def _reply(session: Any, out: Console) -> None:
    """Generate replies until the model stops calling tools or the user skips a result."""
    while True:
        out.print(Text("assistant> ", style="bold magenta"), end="")
        done = session.generate(_stream_printer(out))
        out.print()
        _print_completion(out, done)
        if not session.awaits_result(done.calls):
            return
        result = _read(PROMPTS["tool"])
        if result is None or not result.strip():
            return
        session.add_tool_result(result)
