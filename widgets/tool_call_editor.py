"""Edit one tool call of a turn with a form driven by the tool's JSON schema, validated as you
type by the function the screen hands in (the app's one label validation). The turn editor
(`widgets.turn_editor`) holds one of these per call.

Names, values and the raw JSON come from data: they are shown with control, bidi and zero-width
characters spelled out (JSON escapes in the raw JSON, which parse back to the same value). A
string field holding such characters is edited in the raw JSON only."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from workbench.core import safe_json
from workbench.core.safe_text import dumps_visible, visible

BLANK = Select.NULL if hasattr(Select, "NULL") else Select.BLANK


def tool_parameters(tool: dict) -> dict:
    fn = tool.get("function", tool)
    params = fn.get("parameters") or {"type": "object"}
    return params if isinstance(params, dict) else {"type": "object"}


def _coerce(kind: str | None, raw: str) -> Any:
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "number":
        try:
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            return raw
    if kind in ("array", "object"):
        try:
            return safe_json.loads(raw)
        except ValueError:
            return raw
    return raw


def _show(value: Any) -> str:
    """A value as a field shows it: strings as they are, the rest as JSON, both made visible."""
    return visible(value) if isinstance(value, str) else dumps_visible(value)


def _hidden_chars(value: Any) -> bool:
    """A string the field cannot show as it is (editing the shown text would change it)."""
    return isinstance(value, str) and visible(value) != value


CallCheck = Callable[[str, Any], list[str]]   # (tool name, arguments) -> problems


class ToolCallEditor(Vertical):
    """`tools`: OpenAI function tools; `call`: {"name", "arguments"[, "id"]}; `validate`: the
    problems of a call (none: only JSON is checked). Posts Changed after each validation and
    RemoveRequested when its remove button is pressed."""

    DEFAULT_CSS = """
    ToolCallEditor { height: auto; border: round $panel; margin-bottom: 1; }
    ToolCallEditor #form { height: auto; max-height: 16; }
    ToolCallEditor .field { height: auto; }
    ToolCallEditor .field Label { width: 24; padding: 1 1 0 0; }
    ToolCallEditor .field Input, ToolCallEditor .field Select { width: 1fr; }
    ToolCallEditor #raw { height: 8; }
    ToolCallEditor #status { height: auto; padding: 0 1; }
    ToolCallEditor #status.invalid { color: $error; }
    ToolCallEditor #status.valid { color: $success; }
    """

    class Changed(Message):
        """The call (or its validity) changed."""

    class RemoveRequested(Message):
        def __init__(self, editor: ToolCallEditor) -> None:
            super().__init__()
            self.editor = editor

    def __init__(self, tools: list[dict], call: dict | None,
                 validate: CallCheck | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tools = {(t.get("function", t)).get("name", ""): t for t in tools}
        call = call or {"name": next(iter(self.tools), ""), "arguments": {}}
        self.tool_name: str = call["name"]
        self.call_id: str | None = call.get("id")
        self.check = validate
        args = call.get("arguments")
        self.raw_text = (dumps_visible(args, indent=2) if isinstance(args, dict)
                         else visible(args))
        self._syncing = False
        self.errors: list[str] = []

    # -- composition ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        names = list(self.tools)
        if self.tool_name and self.tool_name not in self.tools:
            names.append(self.tool_name)  # a call of an unknown tool stays editable as raw JSON
        yield Select([(Text(visible(n)), n) for n in names], value=self.tool_name or BLANK,
                     allow_blank=not self.tool_name, id="tool", prompt="tool")
        yield VerticalScroll(id="form", can_focus=False)   # Tab goes from the picker to a field
        yield TextArea(self.raw_text, language="json", id="raw", soft_wrap=True)
        yield Static(id="status")
        yield Button("Remove call", id="remove", variant="error")

    async def on_mount(self) -> None:
        await self._build_form()
        self._validate()

    @property
    def schema(self) -> dict | None:
        tool = self.tools.get(self.tool_name)
        return tool_parameters(tool) if tool else None

    def _arguments(self) -> Any:
        try:
            return safe_json.loads(self.query_one("#raw", TextArea).text)
        except ValueError as e:
            return e

    async def _build_form(self) -> None:
        form = self.query_one("#form", VerticalScroll)
        await form.remove_children()
        schema = self.schema or {}
        props = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        args = self._arguments()
        args = args if isinstance(args, dict) else {}
        rows = []
        for name, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            label = Text(visible(name)) + (Text(" *", style="bold red") if name in required
                                           else Text(""))
            value = args.get(name)
            if "enum" in prop or prop.get("type") == "boolean":
                choices = prop.get("enum") or [True, False]
                widget = Select([(Text(_show(c)), json.dumps(c)) for c in choices],
                                value=json.dumps(value) if value in choices else BLANK,
                                prompt="(unset)", classes="arg")
            else:
                widget = Input("" if value is None else _show(value), classes="arg",
                               placeholder=visible(prop.get("description") or prop.get("type")
                                                   or ""),
                               disabled=_hidden_chars(value))
            widget.arg_name = name  # type: ignore[attr-defined]
            widget.arg_type = prop.get("type")  # type: ignore[attr-defined]
            widget.tooltip = Text(visible(prop.get("description") or ""))
            rows.append(Horizontal(Label(label), widget, classes="field"))
        if not props:
            rows.append(Static(Text("no declared arguments: edit the raw JSON", style="dim")))
        await form.mount_all(rows)

    # -- syncing form <-> raw JSON ----------------------------------------------------------
    def _form_to_raw(self) -> None:
        args = self._arguments()
        args = dict(args) if isinstance(args, dict) else {}
        for w in self.query(".arg"):
            name = w.arg_name  # type: ignore[attr-defined]
            if isinstance(w, Select):
                if w.value == BLANK or w.value is None:
                    args.pop(name, None)
                else:
                    args[name] = json.loads(w.value)
            elif isinstance(w, Input):
                if w.disabled:   # shows a string with hidden characters: the raw JSON holds it
                    continue
                if w.value == "":
                    args.pop(name, None)
                else:
                    args[name] = _coerce(w.arg_type, w.value)  # type: ignore[attr-defined]
        self._syncing = True
        self.query_one("#raw", TextArea).text = dumps_visible(args, indent=2)
        self._syncing = False

    def _raw_to_form(self) -> None:
        args = self._arguments()
        if not isinstance(args, dict):
            return
        self._syncing = True
        try:
            for w in self.query(".arg"):
                value = args.get(w.arg_name)  # type: ignore[attr-defined]
                if isinstance(w, Select):
                    key = json.dumps(value) if value is not None else None
                    target = key if key in w._legal_values else BLANK
                    if w.value != target:
                        w.value = target
                elif isinstance(w, Input):
                    text = "" if value is None else _show(value)
                    w.disabled = _hidden_chars(value)
                    if w.value != text:
                        w.value = text
        finally:
            self._syncing = False

    def _matches_raw(self, widget, value) -> bool:  # noqa: ANN001
        """Whether a field already shows what the raw JSON holds (a change we made ourselves:
        field events arrive after the sync, so the guard flag alone can't tell)."""
        args = self._arguments()
        if not isinstance(args, dict):
            return False
        name = getattr(widget, "arg_name", None)
        if isinstance(widget, Select):
            return (json.dumps(args[name]) if name in args else BLANK) == value
        return (_show(args[name]) if name in args and args[name] is not None else "") == value

    def _validate(self) -> None:
        args = self._arguments()
        if isinstance(args, ValueError):
            self.errors = [f"not JSON: {args}"]
        elif not self.tool_name:
            self.errors = ["pick a tool"]
        else:
            self.errors = self.check(self.tool_name, args) if self.check else []
        status = self.query_one("#status", Static)
        status.set_class(bool(self.errors), "invalid")
        status.set_class(not self.errors, "valid")
        status.update(Text(visible("\n".join(self.errors))) if self.errors else Text("valid"))
        self.post_message(self.Changed())

    async def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "tool":
            self.tool_name = "" if event.value == BLANK else str(event.value)
            await self._build_form()
        elif not self._syncing and not self._matches_raw(event.select, event.value):
            self._form_to_raw()
        self._validate()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if not self._syncing:
            if not self._matches_raw(event.input, event.value):
                self._form_to_raw()
            self._validate()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        if not self._syncing:
            self._raw_to_form()
        self._validate()

    # -- result -----------------------------------------------------------------------------
    def current_call(self) -> dict:
        """{"id", "name", "arguments"}: arguments are a ValueError while the JSON is broken."""
        return {"id": self.call_id, "name": self.tool_name, "arguments": self._arguments()}

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "remove":
            event.stop()
            self.post_message(self.RemoveRequested(self))
