"""The form that starts a job: one field per parameter of the kind's `Params`, then the
selection (the app's current filter, editable), validated as you type; Start stores the job and
starts its detached worker, or shows why the job's own checks refuse it."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Select, Static, Switch

from db import jobs as store
from db.queries import TraceFilter
from workbench.jobs.forms import FormField, param_fields, read_form, selection_fields
from workbench.jobs.registry import get_spec
from workbench.jobs.runner import start_worker, submit
from workbench.core.safe_text import visible
from workbench.app.screens.messages import JobFormRejected, JobStarted


class FieldValidator(Validator):
    """A textual validator that reads the text as the field's type (`FormField.parse`)."""

    def __init__(self, field: FormField) -> None:
        super().__init__()
        self.field = field

    def validate(self, value: str) -> ValidationResult:
        try:
            self.field.parse(value)
        except ValueError as e:
            return self.failure(str(e))
        return self.success()


class JobFormScreen(ModalScreen[int | None]):
    """Dismisses with the new job's id once it is stored and its worker started, else None."""

    DEFAULT_CSS = """
    JobFormScreen { align: center middle; }
    JobFormScreen #job-form { width: 90%; height: 90%; border: thick $accent;
                              background: $surface; padding: 0 1; }
    JobFormScreen .form-section { text-style: bold underline; margin-top: 1; }
    JobFormScreen .form-field { height: auto; margin-bottom: 1; }
    JobFormScreen .form-field Label { text-style: bold; }
    JobFormScreen .form-help { color: $text-muted; }
    JobFormScreen .form-error { color: $error; }
    JobFormScreen #form-error { color: $error; text-style: bold; height: auto; }
    JobFormScreen #form-buttons { height: 3; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="form.cancel"),
                Binding("ctrl+s", "submit", "Start", id="form.start", priority=True)]

    def __init__(self, kind: str, selection: TraceFilter) -> None:
        super().__init__()
        self.kind = kind
        self.spec = get_spec(kind)
        self.params = param_fields(self.spec)
        self.selection_form = selection_fields()
        # the kind's selection defaults (eval: the test split) under the current filter
        self.selection = self.spec.make_selection(selection.to_dict())
        self.busy = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="job-form"):
            yield Static(Text.assemble((f"Start job: {self.kind}", "bold"), "  ",
                                       (self.spec.description, "italic")), id="form-title")
            yield Static(Text("Parameters" + ("  (* required)" if any(
                required(f) for f in self.params) else "")), classes="form-section")
            if not self.params:
                yield Static(Text("(this job has no parameters)"), classes="form-help")
            for f in self.params:
                yield from self._field(f, "p", f.default)
            yield Static(Text("Selection (the traces the job runs on; empty: any)"),
                         classes="form-section")
            for f in self.selection_form:
                yield from self._field(f, "s", getattr(self.selection, f.name))
            yield Static(id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Start", id="form-start", variant="primary")
                yield Button("Cancel", id="form-cancel")

    def _field(self, f: FormField, prefix: str, value: Any) -> ComposeResult:
        wid = f"{prefix}-{f.name}"
        with Vertical(classes="form-field"):
            yield Label(Text(f.name + (" *" if required(f) else "")))
            initial = f.to_widget(value)
            if f.widget == "switch":
                yield Switch(value=initial, id=wid)
            elif f.widget == "select":
                yield Select([(Text(visible(o)), o) for o in f.options], id=wid,
                             allow_blank=f.optional,
                             value=initial if initial is not None else Select.NULL)
            else:
                yield Input(value=initial, id=wid, validators=[FieldValidator(f)],
                            placeholder=_placeholder(f))
            if f.help:
                yield Static(Text(visible(f.help)), classes="form-help")
            yield Static(id=f"{wid}-error", classes="form-error")

    def on_mount(self) -> None:
        first = self.query(".form-field > Input, .form-field > Switch, .form-field > Select")
        if first:
            first.first().focus()

    # -- values -----------------------------------------------------------------------------
    def _raw(self, prefix: str, form: list[FormField]) -> dict[str, Any]:
        raw = {}
        for f in form:
            w = self.query_one(f"#{prefix}-{f.name}")
            if isinstance(w, Select):
                raw[f.name] = None if w.is_blank() else w.value
            else:
                raw[f.name] = w.value
        return raw

    def on_input_changed(self, event: Input.Changed) -> None:
        """Validation as you type: the field's own error under it."""
        if event.input.id is None:
            return
        err = self.query_one(f"#{event.input.id}-error", Static)
        result = event.validation_result
        err.update(Text("; ".join(result.failure_descriptions)) if result and not result.is_valid
                   else Text(""))

    def action_submit(self) -> None:
        if self.busy:
            return
        params, p_err = read_form(self.params, self._raw("p", self.params))
        sel, s_err = read_form(self.selection_form, self._raw("s", self.selection_form))
        errors = [*p_err.values(), *(f"selection {e}" for e in s_err.values())]
        if errors:
            self._show_error("; ".join(errors))
            return
        self.busy = True
        self._show_error("")
        self.start(params, sel)

    def _show_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(Text(visible(message)))

    @work(thread=True, exit_on_error=False, group="job-form")
    def start(self, params: dict, selection: dict) -> None:
        """The job's own checks decide (make_params, the selection); a refusal is shown in the
        form and nothing is stored."""
        try:
            spec = self.spec
            p = spec.make_params(params)
            sel = spec.make_selection(selection)
        except (ValueError, TypeError) as e:
            self.post_message(JobFormRejected(f"{type(e).__name__}: {e}"
                                              if isinstance(e, TypeError) else str(e)))
            return
        with self.app.store() as db:
            job_id = submit(db, self.kind, sel, p)
            cwd = store.get_job(db, job_id)["cwd"]
        start_worker(self.app.db_path, job_id, cwd=cwd)
        self.post_message(JobStarted(job_id))

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        if event.state == WorkerState.ERROR:   # the app shows the error; the form stays usable
            self.busy = False

    def on_job_form_rejected(self, event: JobFormRejected) -> None:
        self.busy = False
        self._show_error(event.error)

    def on_job_started(self, event: JobStarted) -> None:
        event.stop()
        self.dismiss(event.job_id)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-start":
            self.action_submit()
        elif event.button.id == "form-cancel":
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)


def required(f: FormField) -> bool:
    """A field the job cannot run without: no None allowed and no usable default (a list
    that must not be empty, a name to fill in). Fields with a default are not required."""
    return not f.optional and f.default in (None, "", [])


def _placeholder(f: FormField) -> str:
    if f.base.startswith("list"):
        return "comma list"
    if f.optional:
        return "empty: default" if f.default is None else ""
    return {"int": "whole number", "float": "number"}.get(f.base, "")
