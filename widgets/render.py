"""Renderables for untrusted trace text: Rich `Text`, JSON highlighting and diffs, no markup.

Every string from data goes through `workbench.core.safe_text.visible` (or, inside JSON, its JSON
escapes): control, bidi and zero-width characters are shown spelled out, never sent to the
terminal."""

from __future__ import annotations

import difflib
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from workbench.core import safe_json
from workbench.checks.flag_text import reasons, taught_note
from workbench.core.safe_text import dumps_visible, visible

ROLE_STYLE = {"system": "bold magenta", "user": "bold cyan", "assistant": "bold green",
              "tool": "bold yellow"}
SEVERITY_STYLE = {"error": "bold white on red", "warning": "bold black on yellow"}
MAX_SHOWN_CHARS = 20_000  # a 1 MiB log line is shown as its head, so a turn renders at once


def plain(text: object, style: str = "") -> Text:
    """Untrusted text as a `Text`: never markup, control characters spelled out."""
    return Text(visible(text), style=style)


def capped(text: str) -> Text:
    """Plain text, cut to its first MAX_SHOWN_CHARS characters with a note saying how much."""
    if len(text) <= MAX_SHOWN_CHARS:
        return plain(text)
    out = plain(text[:MAX_SHOWN_CHARS])
    out.append(f"\n… {len(text) - MAX_SHOWN_CHARS:,} more characters not shown", style="dim italic")
    return out


def json_text(value: Any) -> Text:
    """Pretty, highlighted JSON of a value (strings inside are data, never markup)."""
    try:
        text = JSONHighlighter()(Text(dumps_visible(value, indent=2)))
    except (TypeError, ValueError, RecursionError):
        try:
            return plain(repr(value))
        except RecursionError:
            return Text("(a value nested too deeply to show)", style="dim italic")
    # long strings wrap inside the panel (folded where they have no space) instead of being
    # cut at its edge: an argument is read whole
    text.no_wrap, text.overflow = False, "fold"
    return text


def content_text(content: str | None) -> Text | RenderableType:
    """Message content: JSON when it is JSON (tool results), else the plain text."""
    if content is None:
        return Text("(no content)", style="dim italic")
    stripped = content.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= MAX_SHOWN_CHARS:
        try:
            return json_text(safe_json.loads(stripped))
        except ValueError:
            pass
    return capped(content)


def call_text(call: dict) -> RenderableType:
    fn = call["function"]
    head = Text.assemble(("call ", "dim"), plain(fn["name"], "bold"))
    if call.get("id"):
        head.append_text(plain(f"  {call['id']}", "dim"))
    args = fn["arguments"]
    if isinstance(args, str):
        return Group(head, Text.assemble(("unparseable arguments: ", "bold red"), capped(args)))
    return Group(head, json_text(args))


def calls_text(calls: list | None, content: str | None = None) -> RenderableType:
    parts: list[RenderableType] = []
    if content:
        parts.append(capped(content))
    for c in calls or ():
        parts.append(call_text(c))
    if not parts:
        parts.append(Text("(empty)", style="dim italic"))
    return Group(*parts)


def flag_badges(flags: list[dict]) -> Text:
    out = Text()
    for f in flags:
        out.append(visible(f" {f['check_name']} "),
                   style=SEVERITY_STYLE.get(f["severity"], "reverse"))
        out.append(" ")
    return out


def flag_details(flags: list[dict], stats: bool = False) -> Text:
    """Each flag's plain sentence and the reasons behind it; its statistical detail only with
    `stats` (else a line says how much is hidden); a kind analysts marked as not a problem
    says so."""
    out = Text()
    for f in flags:
        out.append(visible(f"{f['severity']} "),
                   style="bold red" if f["severity"] == "error" else "yellow")
        out.append(visible(f["check_name"]), style="bold")
        out.append(": ")
        out.append(visible(f["detail"]))
        out.append("\n")
        note = taught_note(f)
        if note:
            out.append(f"  {visible(note)}\n", style="italic")
        shown, hidden = reasons(f, stats)
        for e in shown:
            out.append(f"  why ({visible(str(e.get('source', '?')))}): ", style="dim")
            out.append(visible(str(e.get("text", ""))))
            out.append("\n")
        if hidden:
            out.append(f"  {hidden} statistical detail(s) hidden\n", style="dim")
    out.rstrip()
    return out


def label_lines(message: dict) -> list[str]:
    """A turn's label as comparable lines: its text and its calls as pretty JSON."""
    lines: list[str] = []
    if message.get("content"):
        lines.extend(visible(message["content"]).splitlines())
    for c in message.get("tool_calls") or ():
        fn = c["function"]
        lines.extend(dumps_visible({"name": fn["name"], "arguments": fn["arguments"]}, indent=2,
                                   sort_keys=True).splitlines())
    return lines


def diff_text(original: dict, current: dict) -> Text:
    """Unified diff of a turn's original label and its current one."""
    a, b = label_lines(original), label_lines(current)
    if a == b:
        return Text("current label = original", style="dim")
    out = Text()
    for line in difflib.unified_diff(a, b, "original", "current", lineterm="", n=2):
        style = ("green" if line.startswith("+") else "red" if line.startswith("-")
                 else "cyan" if line.startswith("@@") else "")
        out.append(line + "\n", style=style)
    out.rstrip()
    return out


def history_text(revisions: list[dict], current_id: int | None) -> RenderableType:
    """Every revision of a turn with its author, reason, evidence and status."""
    if not revisions:
        return Text("no revisions: the original is the label", style="dim")
    parts: list[RenderableType] = []
    for r in revisions:
        head = Text.assemble(
            (f"#{r['id']} ", "bold"), (r["status"], {"accepted": "green", "rejected": "red",
                                                     "proposed": "yellow"}[r["status"]]),
            " by ", plain(f"{r['author_kind']}:", "dim"), plain(r["author_name"]),
            ("  CURRENT" if r["id"] == current_id else "", "bold reverse"))
        parts.append(head)
        if r.get("reason"):
            parts.append(Text.assemble(("  reason: ", "dim"), plain(r["reason"])))
        if r.get("evidence") is not None:
            parts.append(Text("  evidence:", style="dim"))
            parts.append(json_text(r["evidence"]))
        parts.append(calls_text(r["tool_calls"], r["content"]))
    return Group(*parts)


def vote_call_text(call: dict) -> Text:
    """One voted call on one line: name(arguments as compact JSON), control characters shown;
    several calls side by side; a text reply quoted."""
    if isinstance(call.get("text"), str):
        return Text.assemble(("reply ", "bold"), dumps_visible(call["text"]))
    if isinstance(call.get("calls"), list):
        return Text("; ").join(vote_call_text(c) for c in call["calls"] if isinstance(c, dict))
    args = call.get("arguments")
    shown = visible(args) if isinstance(args, str) else dumps_visible(args, sort_keys=True)
    return Text.assemble((visible(call.get("name")), "bold"), "(", shown, ")")


def votes_text(votes: list[dict]) -> RenderableType:
    """A turn's committee votes side by side, a table per run (newest first): member (and
    `arbiter` under the arbiter's name), the call or the abstention reason (with the head of the raw reply), latency, tokens and
    cost. Everything untrusted is plain Text with its control characters spelled out."""
    if not votes:
        return Text("no committee votes", style="dim")
    runs: dict[Any, list[dict]] = {}
    for v in votes:
        runs.setdefault(v.get("turn_id"), []).append(v)
    tables: list[RenderableType] = []
    for run in sorted(runs.values(), key=lambda r: r[0].get("id") or 0, reverse=True):
        first = run[0]
        title = Text(f"job {first.get('job_id') or '-'}  {str(first.get('created_at') or '')[:19]}",
                     style="dim")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, expand=True,
                      show_edge=False, pad_edge=False)
        # the role goes under the member's name: four narrow columns fit half of 100
        for head, kw in (("member", {"ratio": 2, "min_width": 6}), ("vote", {"ratio": 5}),
                         ("latency", {"justify": "right"}), ("tokens", {"justify": "right"})):
            table.add_column(Text(head), overflow="fold", **kw)
        for v in run:
            if v.get("call"):
                vote = vote_call_text(v["call"])
            else:
                vote = Text.assemble(("abstained: ", "bold yellow"),
                                     visible(v.get("abstain_reason") or "no reason"))
                if v.get("raw"):
                    raw = str(v["raw"])
                    vote.append(f"\nreply: {visible(raw[:200])}" + ("…" if len(raw) > 200
                                                                     else ""), style="dim")
            latency = v.get("latency_s")
            tokens = (f"{v.get('tokens_in') or 0}/{v.get('tokens_out') or 0}"
                      if v.get("tokens_in") is not None else "")
            if v.get("cost") is not None:
                tokens += f"\n${v['cost']:.4f}"
            member = Text(visible(v.get("member")))
            if v.get("role") == "arbiter":
                member.append("\narbiter", style="bold")
            table.add_row(member, vote, Text("" if latency is None else f"{latency:.2f}s"),
                          Text(tokens))
        tables.append(table)
    return Group(*tables)
