"""Chat requests sent as OpenAI Batch jobs (an endpoint with `batch = true`): a JSONL file of
requests uploaded (purpose "batch"), a batch made from it for /v1/chat/completions, its status
asked every `batch_poll_s` seconds, and its output and error files read back by `custom_id`.

A job never pays twice for a request: the input file id and the batch id are stored with the
job (db.batches) before the batch is waited for, so a killed or stopped job, resumed (or any
later job asking the same requests of the same endpoint), collects those batches (a finished
one's files are read again) and sends only the requests none of them holds. A request that failed (a line of the error file, a batch that failed, expired or was
cancelled) is sent once more, in a new smaller batch; a second failure is its outcome in this
run, returned with why (never a reply), and a later run asks it again. Callers parse replies as their online path does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from db import batches as store
from workbench.models.endpoints import Endpoint
from workbench.jobs.context import JobContext
from workbench.core.redaction import redact
from workbench.core.safe_text import visible

URL = "/v1/chat/completions"
MAX_REQUESTS = 50_000          # OpenAI's limit per batch
MAX_BYTES = 150_000_000        # an input file stays under the 200 MB limit
TRIES = 2                      # a failed request is sent once more, then reported
UPLOAD_TIMEOUT_S = 600.0       # an input file of 100 MB takes longer than a reply


@dataclass
class Outcome:
    """What came back: each request's completion body, or why there is none."""

    replies: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)     # the batch ids collected


def _why(text: str) -> str:
    return visible(redact(text))[:300]


def _chunks(lines: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    out: list[list[tuple[str, bytes]]] = [[]]
    size = 0
    for cid, line in lines:
        if out[-1] and (len(out[-1]) >= MAX_REQUESTS or size + len(line) > MAX_BYTES):
            out.append([])
            size = 0
        out[-1].append((cid, line))
        size += len(line)
    return [c for c in out if c]


def _transient(exc: BaseException) -> bool:
    """A connection error, a timeout, a 429 or a 5xx: the status is asked again later."""
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    status = getattr(exc, "status_code", None)
    return status is not None and (status == 429 or status >= 500)


def batch_client(endpoint: Endpoint) -> Any:
    """The endpoint's OpenAI client, or a folder's stand-in (`file://`: vLLM's run_batch)."""
    from workbench.models.batch_folder import SCHEME, FolderBatches

    if endpoint.base_url.startswith(SCHEME):
        return FolderBatches(endpoint.base_url, endpoint.model)
    return endpoint.with_timeout(max(endpoint.timeout, UPLOAD_TIMEOUT_S)).client()


class BatchCaller:
    """One endpoint's batches inside one job."""

    def __init__(self, ctx: JobContext, endpoint: Endpoint, client: Any = None) -> None:
        if ctx.job_id is None:
            raise ValueError("a batch endpoint runs inside a job (its batch ids are stored)")
        self.ctx, self.endpoint = ctx, endpoint
        self.client = client or batch_client(endpoint)

    def run(self, requests: dict[str, dict]) -> Outcome:
        """Replies to `requests` (custom_id -> chat completion request body) by custom_id."""
        out = Outcome()
        tries: dict[str, int] = {}
        for row in store.batches_holding(self.ctx.db, self.endpoint.name,
                                         self.endpoint.base_url, list(requests)):
            held = [c for c in row["custom_ids"] if c in requests and c not in out.replies]
            if not held:
                continue
            whose = ("an earlier run" if row["job_id"] == self.ctx.job_id else
                     f"job {row['job_id']}")
            self.ctx.log(f"{self.endpoint.name}: collecting batch {row['batch_id'] or 'uploaded'}"
                         f" of {whose} ({len(held)} requests)")
            self._collect(row, out)     # its failures are sent again, as online ones are
        while True:
            todo = {c: body for c, body in requests.items()
                    if c not in out.replies and tries.get(c, 0) < TRIES}
            if not todo:
                break
            if any(tries.get(c) for c in todo):
                self.ctx.log(f"{self.endpoint.name}: {len(todo)} requests sent again in a new"
                             " batch")
            rows = [self._submit(chunk) for chunk in _chunks(
                [(c, self._line(c, body)) for c, body in todo.items()])]
            for row in rows:
                self._collect(row, out)
            for c in todo:
                tries[c] = tries.get(c, 0) + 1
        for c in requests:
            if c in out.replies:
                out.errors.pop(c, None)
            else:
                out.errors.setdefault(c, "no reply in its batch")
        return out

    def _line(self, custom_id: str, body: dict) -> bytes:
        return (json.dumps({"custom_id": custom_id, "method": "POST", "url": URL, "body": body},
                           ensure_ascii=False) + "\n").encode()

    def _submit(self, chunk: list[tuple[str, bytes]]) -> dict:
        """Upload one input file and make a batch of it; the ids are stored as they come."""
        self.ctx.check_cancel()
        data = b"".join(line for _, line in chunk)
        uploaded = self.client.files.create(file=("requests.jsonl", data), purpose="batch")
        rid = store.add_batch(self.ctx.db, self.ctx.job_id, self.endpoint.name,
                              self.endpoint.base_url, uploaded.id, [c for c, _ in chunk])
        row = {"id": rid, "input_file_id": uploaded.id, "batch_id": None, "status": "uploaded",
               "custom_ids": [c for c, _ in chunk]}
        self._create(row)
        return row

    def _create(self, row: dict) -> None:
        made = self.client.batches.create(
            input_file_id=row["input_file_id"], endpoint=URL,
            completion_window=self.endpoint.batch_window,  # type: ignore[arg-type]
            metadata={"workbench_job": str(self.ctx.job_id)})
        row["batch_id"], row["status"] = made.id, made.status
        store.update_batch(self.ctx.db, row["id"], batch_id=made.id, status=made.status)
        self.ctx.log(f"{self.endpoint.name}: batch {made.id} submitted"
                     f" ({len(row['custom_ids'])} requests)")
        command = getattr(self.client.batches, "command", None)
        if command is not None:     # a folder: the analyst runs the batch (vLLM)
            self.ctx.log(f"{self.endpoint.name}: run the batch with: {command(made.id)}")

    def _find(self, row: dict) -> None:
        """A row stored before its batch id (the job died in between): the provider's batch
        made from that input file, else one is made from it now."""
        for made in self.client.batches.list(limit=100):
            if made.input_file_id == row["input_file_id"]:
                row["batch_id"], row["status"] = made.id, made.status
                store.update_batch(self.ctx.db, row["id"], batch_id=made.id, status=made.status)
                return
        self._create(row)

    def _collect(self, row: dict, out: Outcome) -> None:
        """Wait for one batch to finish and read its replies and errors."""
        if row["batch_id"] is None:
            self._find(row)
        batch = self._wait(row)
        out.batches.append(row["batch_id"])
        replies: dict[str, dict] = {}
        failed: dict[str, str] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                self._read(self._download(row, file_id), replies, failed)
        if batch.status != "completed":
            why = _why(f"the batch {batch.status}" + (f": {self._errors(batch)}"
                                                       if self._errors(batch) else ""))
            store.update_batch(self.ctx.db, row["id"], detail=why)
            self.ctx.log(f"{self.endpoint.name}: batch {row['batch_id']}: {why}")
        else:
            why = "no reply in the batch's output"
        ids = set(row["custom_ids"])
        for c in ids - set(replies) - set(failed):
            failed[c] = why
        replies = {c: r for c, r in replies.items() if c in ids}
        failed = {c: w for c, w in failed.items() if c in ids and c not in replies}
        store.mark_requests(self.ctx.db, row["id"], list(replies), failed)
        out.replies.update(replies)
        for c, w in failed.items():
            if c not in out.replies:
                out.errors[c] = w
        if failed:
            self.ctx.log(f"{self.endpoint.name}: batch {row['batch_id']}: {len(failed)} of"
                         f" {len(ids)} requests failed (first: {next(iter(failed.values()))})")

    def _download(self, row: dict, file_id: str) -> bytes:
        """A result file's bytes; one the provider no longer has (deleted, expired) or cannot
        send now holds nothing: its requests are failures, sent again."""
        try:
            return self.client.files.content(file_id).content
        except Exception as e:  # noqa: BLE001 - classified here
            if not (_transient(e) or getattr(e, "status_code", None) in (404, 410)):
                raise
            self.ctx.log(f"{self.endpoint.name}: batch {row['batch_id']}: file {file_id} not"
                         f" read ({_why(type(e).__name__ + ': ' + str(e))})")
            return b""

    @staticmethod
    def _errors(batch: Any) -> str:
        data = getattr(getattr(batch, "errors", None), "data", None) or []
        return "; ".join(str(getattr(e, "message", "") or getattr(e, "code", "")) for e in data)

    def _wait(self, row: dict) -> Any:
        """Ask the batch's status until it is finished; a stop leaves it running (resume)."""
        seen = None
        while True:
            try:
                batch = self.client.batches.retrieve(row["batch_id"])
            except Exception as e:  # noqa: BLE001 - a batch outlives a network blip
                if not _transient(e):
                    raise
                self.ctx.log(f"{self.endpoint.name}: batch {row['batch_id']}: status not read"
                             f" ({_why(type(e).__name__ + ': ' + str(e))}); asked again")
                batch = SimpleNamespace(status=seen)
            if batch.status != seen:
                seen = batch.status
                store.update_batch(self.ctx.db, row["id"], status=batch.status,
                                   output_file_id=batch.output_file_id,
                                   error_file_id=batch.error_file_id)
                counts = batch.request_counts
                self.ctx.log(f"{self.endpoint.name}: batch {row['batch_id']}: {batch.status}"
                             + (f" ({counts.completed}/{counts.total} done, {counts.failed}"
                                " failed)" if counts else ""))
            if batch.status in store.FINISHED:
                return batch
            deadline = time.monotonic() + self.endpoint.batch_poll_s
            while time.monotonic() < deadline:
                if self.ctx.stop_requested() is not None:
                    self.ctx.log(f"{self.endpoint.name}: stopping; batch {row['batch_id']}"
                                 " keeps running at the provider and a resumed job collects it")
                    self.ctx.check_cancel()
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _read(self, data: bytes, replies: dict[str, dict], failed: dict[str, str]) -> None:
        """Lines of an output or error file: a reply (HTTP 200 with a body) or why not."""
        for n, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                self.ctx.log(f"{self.endpoint.name}: line {n} of a batch file is not a result")
                continue
            response = line.get("response") or {}
            error = line.get("error")
            status = response.get("status_code") if isinstance(response, dict) else None
            if error or status != 200 or not isinstance(response.get("body"), dict):
                message = (error.get("message") or error.get("code")) if isinstance(
                    error, dict) else None
                if message is None and isinstance(response, dict):
                    body = response.get("body")
                    inner = body.get("error") if isinstance(body, dict) else None
                    message = inner.get("message") if isinstance(inner, dict) else None
                failed[str(cid)] = _why(f"HTTP {status}: {message}" if status else
                                        str(message or "failed"))
            else:
                replies[str(cid)] = response["body"]
