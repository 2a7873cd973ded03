"""What the screens' workers tell them: one message class per event.

Workers only read or write the store and post one of these; the screen's `on_<name>` handler
updates widgets on the UI thread. A class per event (not one generic message dispatched by a
string) means a handler cannot receive data shaped for another event, and a misspelt event is
an error at import, not a message silently ignored.
"""

from __future__ import annotations

from textual.message import Message

from db.queries import TraceFilter


# -- traces screen -----------------------------------------------------------------------

class FilterRestored(Message):
    """The saved filter and the filter bar's choices (tools, checks)."""

    def __init__(self, filter: TraceFilter, choices: dict) -> None:  # noqa: A002 - the event field
        super().__init__()
        self.filter = filter
        self.choices = choices


class PageLoaded(Message):
    """A page of trace rows; `generation` discards pages of an older filter or sort."""

    def __init__(self, rows: list[dict], append: bool, generation: int) -> None:
        super().__init__()
        self.rows = rows
        self.append = append
        self.generation = generation


class CountLoaded(Message):
    """How many traces the filter selects (for the same `generation`)."""

    def __init__(self, total: int, generation: int) -> None:
        super().__init__()
        self.total = total
        self.generation = generation


class RowsRefreshed(Message):
    """Rows read again after another screen may have changed their labels."""

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = rows


# -- decisions (detail, review, bulk) ----------------------------------------------------

class DecisionMade(Message):
    """An analyst's decision was written; `message` says what it did, in plain words."""

    def __init__(self, message: str, trace_id: int | None, turn: int | None) -> None:
        super().__init__()
        self.message = message
        self.trace_id = trace_id
        self.turn = turn


# -- detail and review -------------------------------------------------------------------

class TraceLoaded(Message):
    """Everything the detail screen shows of one trace."""

    def __init__(self, view: dict) -> None:
        super().__init__()
        self.view = view


class QueueLoaded(Message):
    """The review queue: (trace id, turn) pairs waiting for a decision."""

    def __init__(self, queue: list[tuple[int, int]], everywhere: int | None = None) -> None:
        super().__init__()
        self.queue = queue
        self.everywhere = everywhere   # turns waiting in the whole store (under a filter)


class ReviewItemLoaded(Message):
    """One turn of the review queue with its context, flags and candidates."""

    def __init__(self, item: dict) -> None:
        super().__init__()
        self.item = item


# -- jobs --------------------------------------------------------------------------------

class JobsLoaded(Message):
    """Every job row, and the selected one with its log (None when none is selected)."""

    def __init__(self, jobs: list[dict], job: dict | None) -> None:
        super().__init__()
        self.jobs = jobs
        self.job = job


class JobStarted(Message):
    """A job was stored and its detached worker started."""

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id


class JobCancelRequested(Message):
    """A cancel was requested for a job (its worker stops at its next check)."""

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id


# -- chat tester and replay ----------------------------------------------------------------

class ModelsListed(Message):
    """What one can chat with: (label, reference) pairs."""

    def __init__(self, choices: list[tuple[str, str]]) -> None:
        super().__init__()
        self.choices = choices


class SessionOpened(Message):
    """A chat session with the chosen model is open."""

    def __init__(self, session: object, label: str) -> None:
        super().__init__()
        self.session = session
        self.label = label


class TokenStreamed(Message):
    """A piece of the reply as the model streams it."""

    def __init__(self, piece: str) -> None:
        super().__init__()
        self.piece = piece


class ReplyDone(Message):
    """A finished reply with, for each call, why it does not fit the schemas (or None)."""

    def __init__(self, completion: object, problems: list[str | None]) -> None:
        super().__init__()
        self.completion = completion
        self.problems = problems


class ResultFound(Message):
    """A stored tool result for the pending call (None: none found)."""

    def __init__(self, text: str | None) -> None:
        super().__init__()
        self.text = text


class TraceOpened(Message):
    """The trace to replay (None: there is no such trace)."""

    def __init__(self, conversation: object) -> None:
        super().__init__()
        self.conversation = conversation


class TurnReplayed(Message):
    """One replayed turn: reference, prediction, staged score, differing fields."""

    def __init__(self, turn: object) -> None:
        super().__init__()
        self.turn = turn


class JobFormRejected(Message):
    """The job form's values were refused by the job's own checks; nothing was stored."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


# -- training view -----------------------------------------------------------------------

class TrainingLoaded(Message):
    """A train job's row and the metrics points parsed from its stored log."""

    def __init__(self, job: dict | None, points: list[dict]) -> None:
        super().__init__()
        self.job = job
        self.points = points


# -- evaluation results ------------------------------------------------------------------

class RunsLoaded(Message):
    """Every evaluation run with its model's name and metrics."""

    def __init__(self, runs: list[dict]) -> None:
        super().__init__()
        self.runs = runs


class RunReportLoaded(Message):
    """One run's report (confusion matrix, per-tool scores, worst turns) and its comparison
    with a baseline run (None when there is none)."""

    def __init__(self, report: dict, comparison: dict | None) -> None:
        super().__init__()
        self.report = report
        self.comparison = comparison


class CandidatesLoaded(Message):
    """Synthesis candidates, newest first (accepted and rejected, with reasons and seeds)."""

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = rows
