"""A scripted OpenAI-compatible chat server on 127.0.0.1, for exact, repeatable replies.

`ScriptedServer(reply)` calls `reply(body)` for each POST to /v1/chat/completions and answers:
- `{"content": str}` or `{"tool_calls": [...]}`: a normal completion (200);
- `{"status": N, "body": str}`: an HTTP error with that body;
- `{"raw": str}`: a 200 whose body is exactly that text (garbage replies);
- with `"delay": seconds` beside any of them: answered that much later (timeouts, throughput).
A request with `"stream": true` gets the same answer as server-sent events.
Every request body and Authorization header is recorded. `models` (a list of model objects)
answers GET /v1/models (otherwise 501, as a server without a model list).
`in_flight` / `max_in_flight`: the requests received and not yet answered, now and at most
(a thread per connection, a listen backlog of 1024: a client's concurrency is what it sends).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[dict], dict]


class ScriptedServer:
    def __init__(self, reply: Reply, models: list[dict] | None = None) -> None:
        self.reply = reply
        self.models = models
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
                if server.models is None or not self.path.endswith("/models"):
                    self._send(501, b"{}", "application/json")
                    return
                self._send(200, json.dumps({"object": "list", "data": server.models}).encode(),
                           "application/json")

            def do_POST(self) -> None:  # noqa: N802
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
                    message = {k: v for k, v in answer.items() if k in ("content", "tool_calls")}
                    message.setdefault("content", None)
                    payload = {"id": "x", "object": "chat.completion", "created": 0,
                               "model": body.get("model", "m"),
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", **message}}],
                               "usage": {"prompt_tokens": answer.get("prompt_tokens", 100),
                                         "completion_tokens": answer.get("completion_tokens", 20),
                                         "total_tokens": 120}}
                    self._send(200, json.dumps(payload).encode(), "application/json")

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


def tool_call_reply(name: str, arguments: dict) -> dict:
    """A native tool-call answer."""
    return {"tool_calls": [{"id": "v1", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)}}]}


def doubtful_turn(body: dict) -> int:
    """The turn index a committee request asks about (from its prompt)."""
    text = body["messages"][-1]["content"]
    marker = text.index(">>> DOUBTFUL <<<")
    return int(text[text.rindex("[", 0, marker) + 1:text.rindex("]", 0, marker)])
