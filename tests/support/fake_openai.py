"""A real local HTTP server that speaks the OpenAI chat completions API.

Why a real server instead of mocking the SDK: the orchestrator's retry,
timeout and error handling live in (and around) the `openai` client and its
HTTP transport.  Only a real socket lets tests inject the low-level faults
that matter in production -- connection resets, hangs, malformed bodies --
and observe exactly what the client sent.  It binds 127.0.0.1 only.

A `Reply` with `tool_calls` answers like a model calling tools: scripting one key
with several replies (`script(key, Reply(tool_calls=[...]), "done")`) plays a
ReAct loop turn by turn, since each turn is one request under the same key.
"""
from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

HANG_LIMIT = 120.0  # a hang never outlives this, so a forgotten server cannot wedge a run
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error"}


@dataclass
class ToolCall:
    """A tool call the fake model makes: dict arguments are JSON-encoded, a string is sent as is."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def payload(self) -> dict[str, Any]:
        """The call as it appears in `message.tool_calls`; a missing id becomes `call_<uuid>`."""
        args = self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)
        return {"id": self.id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": self.name, "arguments": args}}


@dataclass
class Reply:
    """One scripted answer (or fault) for a chat completion request.

    `finish_reason` defaults to "tool_calls" when `tool_calls` is set, else "stop".
    """

    content: str | None = None
    status: int = 200
    error_message: str = "injected error"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    reset: bool = False
    malformed: bool = False
    finish_reason: str | None = None
    refusal: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[ToolCall] | None = None


@dataclass
class RecordedCall:
    """A chat request as the server saw it; recorded on arrival, completed when answered."""

    index: int
    body: dict
    headers: dict[str, str]
    key: str | None
    started: float
    finished: float = 0.0
    status: int = 0


Responder = Callable[[dict], "Reply | str"]


def json_reply(obj: Any) -> str:
    """Serialize `obj` as assistant content, for code that parses JSON answers."""
    return json.dumps(obj)


def tool_results(body: dict) -> dict[str, str]:
    """The tool results a request carries, by tool call id: what the model was shown."""
    return {m.get("tool_call_id", ""): text(m.get("content")) for m in body.get("messages") or []
            if isinstance(m, dict) and m.get("role") == "tool"}


def text(value: Any) -> str:
    """Message content as one string (a string, a list of text parts, or None)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(p.get("text") or "") for p in value if isinstance(p, dict))
    return ""


def words(value: Any) -> int:
    """Whitespace word count of message content (a string or a list of text parts)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(p.get("text")) for p in value if isinstance(p, dict))
    return 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Send a complete response; Content-Length always set so keep-alive works."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        err = {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "code": str(status)}
        self._send(status, json.dumps({"error": err}).encode(), headers)

    def _read_body(self) -> bytes:
        """Always drain the body, or leftover bytes would corrupt the next keep-alive request."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._send(200, b'{"status": "ok"}')
        elif self.path.rstrip("/") == "/v1/models":
            model = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}
            self._send(200, json.dumps({"object": "list", "data": [model]}).encode())
        else:
            self._error(404, f"fake server: unknown path {self.path}")

    def do_POST(self) -> None:
        raw = self._read_body()
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"fake server: unknown path {self.path}")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._error(400, "fake server: request body is not a JSON object")
        owner = self.server.owner
        call, reply = owner._route(body, dict(self.headers.items()))
        if isinstance(reply, str):  # routing failed: reply carries the error message
            owner._finish(call, 500)
            return self._error(500, reply)
        if reply.delay and owner._stopping.wait(reply.delay):
            return self._abort(call, reset=False)
        if reply.hang:
            return self._hang(call)
        if reply.reset:
            return self._abort(call, reset=True)
        if reply.malformed:
            owner._finish(call, 200)
            return self._send(200, b'{"id": "chatcmpl-broken", "choices": [', reply.headers)
        owner._finish(call, reply.status)
        if reply.status != 200:
            return self._error(reply.status, reply.error_message, reply.headers)
        self._send(200, json.dumps(_completion(body, reply)).encode(), reply.headers)

    def _hang(self, call: RecordedCall) -> None:
        """Answer nothing until the server stops, the client goes away, or HANG_LIMIT."""
        deadline = time.monotonic() + HANG_LIMIT
        while time.monotonic() < deadline and not self.server.owner._stopping.wait(0.05):
            if self._client_gone():
                break
        self._abort(call, reset=False)

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _abort(self, call: RecordedCall, reset: bool) -> None:
        """Drop the connection without a response; with `reset`, force a TCP RST."""
        self.server.owner._finish(call, 0)
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile reference so close() really closes the fd
            self.connection.close()


def _completion(body: dict, reply: Reply) -> dict:
    """Build a valid ChatCompletion payload for a successful reply."""
    messages = body.get("messages") or []
    prompt = reply.prompt_tokens
    if prompt is None:
        prompt = sum(words(m.get("content")) for m in messages if isinstance(m, dict))
    calls = [c.payload() for c in reply.tool_calls or ()]
    completion = reply.completion_tokens
    if completion is None:
        completion = words(reply.content) + sum(1 + words(c["function"]["arguments"]) for c in calls)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
    if calls:
        message["tool_calls"] = calls
    finish_reason = reply.finish_reason or ("tool_calls" if calls else "stop")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: the 6th of ten simultaneous connects
    # is dropped and retried by the client's TCP stack a second later.
    request_queue_size = 128
    owner: "FakeOpenAI"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client disconnects mid-fault are expected, not test failures


class FakeOpenAI:
    """Scriptable OpenAI-compatible server; use as a context manager or start()/stop()."""

    def __init__(self, responder: Responder | None = None,
                 key_fn: Callable[[dict], str | None] | None = None) -> None:
        self._default = responder
        self._key_fn = key_fn
        self._lock = threading.Lock()
        self._scripts: dict[str | None, list[Reply]] = {}
        self._calls: list[RecordedCall] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeOpenAI":
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.owner = self
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-openai", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Wake hanging handlers, stop accepting, and cut idle keep-alive connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive handlers would otherwise block on readline
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._server = self._thread = None

    __enter__ = start

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, key: str, *replies: Reply | str) -> None:
        """Queue replies for `key`, consumed in order; the last one is reused forever."""
        with self._lock:
            queue = self._scripts.setdefault(key, [])
            queue.extend(Reply(content=r) if isinstance(r, str) else r for r in replies)

    def set_default(self, responder: Responder) -> None:
        self._default = responder

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._calls.clear()
            self._default = None

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return [replace(c) for c in self._calls]

    def calls_for(self, key: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.key == key]

    # -- used by the handler -------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _route(self, body: dict, headers: dict[str, str]) -> tuple[RecordedCall, Reply | str]:
        """Record the call, then pick its reply (or an error message string)."""
        started, key, failure = time.monotonic(), None, None
        try:
            key = self._key_fn(body) if self._key_fn else None
        except Exception as exc:  # noqa: BLE001 - surface key_fn bugs as 500s
            failure = f"fake server: key_fn failed: {exc!r}"
        with self._lock:
            call = RecordedCall(len(self._calls), body, headers, key, started)
            self._calls.append(call)
            queue = self._scripts.get(key) if failure is None else None
            scripted = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
            default = self._default
        if failure is not None or scripted is not None:
            return call, failure or scripted
        if default is None:
            return call, f"fake server: no reply scripted for key={key!r}"
        try:
            result = default(body)
        except Exception as exc:  # noqa: BLE001 - surface responder bugs as 500s
            return call, f"fake server: responder failed: {exc!r}"
        return call, Reply(content=result) if isinstance(result, str) else result

    def _finish(self, call: RecordedCall, status: int) -> None:
        """Complete the record *before* bytes go out, so clients never see a stale record."""
        with self._lock:
            call.finished, call.status = time.monotonic(), status
