"""A scripted OpenAI-compatible chat server on 127.0.0.1, for exact, repeatable replies.

`ScriptedServer(reply)` calls `reply(body)` for each POST to /v1/chat/completions and answers:
- `{"content": str}` or `{"tool_calls": [...]}`: a normal completion (200);
- `{"status": N, "body": str}`: an HTTP error with that body;
- `{"raw": str}`: a 200 whose body is exactly that text (garbage replies);
- with `"delay": seconds` beside any of them: answered that much later (timeouts, throughput).
A request with `"stream": true` gets the same answer as server-sent events.
Every request body and Authorization header is recorded. `models` (a list of model objects)
answers GET /v1/models (otherwise 501, as a server without a model list).

It is also a Batch server: /v1/files (upload, `GET .../content`) and /v1/batches (create,
retrieve, list, cancel). A batch is `in_progress` for `batch_polls` retrieves, then answers
each line of its input file with `reply(body)` (recorded in `requests`, as an online request
is: what was paid for), except the custom ids `batch_fail(custom_id)` is true for, which go
to its error file; `batch_end(n)` says how the n-th batch made ends (default "completed";
"expired" or "cancelled" answer no line). `batches` holds every batch made; the next
`batch_errors` retrieves of a batch are answered 503.
`in_flight` / `max_in_flight`: the requests received and not yet answered, now and at most
(a thread per connection, a listen backlog of 1024: a client's concurrency is what it sends).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[dict], dict]


class ScriptedServer:
    def __init__(self, reply: Reply, models: list[dict] | None = None, *,
                 batch_polls: int = 0, batch_fail: Callable[[str], bool] | None = None,
                 batch_end: Callable[[int], str] | None = None) -> None:
        self.reply = reply
        self.models = models
        self.batch_polls = batch_polls
        self.batch_fail = batch_fail or (lambda custom_id: False)
        self.batch_end = batch_end or (lambda n: "completed")
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.batch_errors = 0    # the next retrieves answered 503 (a provider's bad minute)
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # TCP_NODELAY: a reply is not held back 40 ms

            def do_GET(self) -> None:  # noqa: N802
                if "/files/" in self.path or "/batches" in self.path:
                    status, data, ctype = server.batch_get(self.path)
                    self._send(status, data, ctype)
                    return
                if server.models is None or not self.path.endswith("/models"):
                    self._send(501, b"{}", "application/json")
                    return
                self._send(200, json.dumps({"object": "list", "data": server.models}).encode(),
                           "application/json")

            def do_POST(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/files"):
                    data = self.rfile.read(int(self.headers["Content-Length"]))
                    self._send(200, server.upload(self.headers["Content-Type"], data),
                               "application/json")
                    return
                if "/batches" in self.path:
                    data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    status, out = server.batch_post(self.path, json.loads(data or b"{}"))
                    self._send(status, out, "application/json")
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                except (ValueError, TypeError, OSError):
                    return   # a client killed while sending (the kill-and-resume tests)
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, body: dict) -> None:
                answer = server.reply(body)
                if answer.get("delay"):
                    time.sleep(answer["delay"])
                if "status" in answer:
                    self._send(answer["status"], answer.get("body", "error").encode(),
                               "application/json")
                elif "raw" in answer:
                    self._send(200, answer["raw"].encode(), "application/json")
                elif body.get("stream"):
                    self._stream(body, answer)
                else:
                    self._send(200, json.dumps(completion(body, answer)).encode(),
                               "application/json")

            def _stream(self, body: dict, answer: dict) -> None:
                """Server-sent events: the content in two pieces, each tool call as one delta."""
                content = answer.get("content") or ""
                half = len(content) // 2
                deltas = [{"content": c} for c in (content[:half], content[half:]) if c]
                deltas += [{"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                            "function": c["function"]}]}
                           for i, c in enumerate(answer.get("tool_calls") or [])]
                events = b""
                for i, delta in enumerate(deltas + [{}]):
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0,
                             "model": body.get("model", "m"), "choices": [{
                                 "index": 0, "delta": delta,
                                 "finish_reason": "stop" if i == len(deltas) else None}]}
                    events += f"data: {json.dumps(chunk)}\n\n".encode()
                self._send(200, events + b"data: [DONE]\n\n", "text/event-stream")

            def _send(self, status: int, data: bytes, ctype: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (a timeout test)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024    # many clients connecting at once are not refused

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------------- batch API

    def upload(self, ctype: str, data: bytes) -> bytes:
        """A multipart upload (purpose, file) kept as a file object."""
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + data)
        parts = {p.get_param("name", header="content-disposition"): p
                 for p in msg.iter_parts()}
        content = parts["file"].get_payload(decode=True)
        with self.lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                                   "created_at": 0, "filename": parts["file"].get_filename(),
                                   "purpose": parts["purpose"].get_content().strip(),
                                   "status": "processed", "content": content}
            return json.dumps({k: v for k, v in self.files[file_id].items()
                               if k != "content"}).encode()

    def _new_file(self, lines: list[dict], purpose: str) -> str | None:
        if not lines:
            return None
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                               "created_at": 0, "filename": "out.jsonl", "purpose": purpose,
                               "status": "processed", "content": content}
        return file_id

    def batch_post(self, path: str, body: dict) -> tuple[int, bytes]:
        with self.lock:
            if path.rstrip("/").endswith("/cancel"):
                batch = self.batches[path.rstrip("/").split("/")[-2]]
                batch["status"] = "cancelled"
                return 200, json.dumps(batch).encode()
            if body.get("input_file_id") not in self.files:
                return 400, b'{"error": {"message": "no such file"}}'
            n = len(self.batches) + 1
            batch = {"id": f"batch_{n}", "object": "batch", "endpoint": body["endpoint"],
                     "input_file_id": body["input_file_id"],
                     "completion_window": body["completion_window"], "status": "validating",
                     "created_at": 0, "metadata": body.get("metadata"), "polls": 0,
                     "end": self.batch_end(n), "output_file_id": None, "error_file_id": None,
                     "request_counts": {"total": 0, "completed": 0, "failed": 0}}
            self.batches[batch["id"]] = batch
            return 200, json.dumps(batch).encode()

    def batch_get(self, path: str) -> tuple[int, bytes, str]:
        parts = path.split("?")[0].rstrip("/").split("/")
        with self.lock:
            if parts[-1] == "content" and parts[-2] in self.files:
                return 200, self.files[parts[-2]]["content"], "application/octet-stream"
            if parts[-1] == "batches":
                return 200, json.dumps({"object": "list", "data": list(self.batches.values()),
                                        "has_more": False}).encode(), "application/json"
            batch = self.batches.get(parts[-1])
            if batch is not None and self.batch_errors > 0:
                self.batch_errors -= 1
                return 503, b'{"error": {"message": "busy"}}', "application/json"
            if batch is None:
                return 404, b'{"error": {"message": "not found"}}', "application/json"
            batch["polls"] += 1
            if batch["status"] in ("validating", "in_progress"):
                batch["status"] = "in_progress"
                if batch["polls"] > self.batch_polls:
                    self._finish(batch)
            return 200, json.dumps(batch).encode(), "application/json"

    def _finish(self, batch: dict) -> None:
        """Answer the batch's lines (under the lock): output, error file, counts."""
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]]["content"].splitlines()
                 if x.strip()]
        batch["request_counts"]["total"] = len(lines)
        batch["status"] = batch["end"]
        if batch["end"] != "completed":
            return
        out, err = [], []
        for line in lines:
            cid = line["custom_id"]
            if self.batch_fail(cid):
                err.append({"id": f"r-{cid}", "custom_id": cid, "response": {
                    "status_code": 500, "request_id": "r",
                    "body": {"error": {"message": "scripted failure"}}}, "error": None})
                continue
            self.requests.append(line["body"])
            answer = self.reply(line["body"])
            if "status" in answer:
                err.append({"id": f"r-{cid}", "custom_id": cid, "response": {
                    "status_code": answer["status"], "request_id": "r",
                    "body": {"error": {"message": answer.get("body", "error")}}},
                    "error": None})
            else:
                out.append({"id": f"r-{cid}", "custom_id": cid, "response": {
                    "status_code": 200, "request_id": "r",
                    "body": completion(line["body"], answer)}, "error": None})
        batch["request_counts"].update(completed=len(out), failed=len(err))
        batch["output_file_id"] = self._new_file(out, "batch_output")
        batch["error_file_id"] = self._new_file(err, "batch_output")

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def completion(body: dict, answer: dict) -> dict:
    """A chat completion body for a scripted answer ({"content"} or {"tool_calls"})."""
    message = {k: v for k, v in answer.items() if k in ("content", "tool_calls")}
    message.setdefault("content", None)
    return {"id": "x", "object": "chat.completion", "created": 0,
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", **message}}],
            "usage": {"prompt_tokens": answer.get("prompt_tokens", 100),
                      "completion_tokens": answer.get("completion_tokens", 20),
                      "total_tokens": 120}}


def tool_call_reply(name: str, arguments: dict) -> dict:
    """A native tool-call answer."""
    return {"tool_calls": [{"id": "v1", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)}}]}


def doubtful_turn(body: dict) -> int:
    """The turn index a committee request asks about (from its prompt)."""
    text = body["messages"][-1]["content"]
    marker = text.index(">>> DOUBTFUL <<<")
    return int(text[text.rindex("[", 0, marker) + 1:text.rindex("]", 0, marker)])
