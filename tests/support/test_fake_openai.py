"""Exercise FakeOpenAI through the real `openai` SDK, so the faults it injects
are known to surface as the exceptions the orchestrator will actually see."""
from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from .fake_openai import FakeOpenAI, Reply, ToolCall, json_reply, tool_results
from .flows import route


def _key(body: dict) -> str | None:
    """Route on the last user message, the way planner tests script steps."""
    return body["messages"][-1]["content"]


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(key_fn=_key) as server:
        yield server


@pytest.fixture
def server(shared: FakeOpenAI) -> FakeOpenAI:
    shared.reset()
    return shared


def _client(server: FakeOpenAI, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=timeout)


def _ask(server: FakeOpenAI, prompt: str, timeout: float = 5.0):
    messages = [{"role": "user", "content": prompt}]
    return _client(server, timeout).chat.completions.create(model="m-1", messages=messages)


def test_scripted_content_and_completion_shape(server: FakeOpenAI) -> None:
    server.script("plan", json_reply({"steps": [1]}))
    resp = _ask(server, "plan")
    assert resp.choices[0].message.content == '{"steps": [1]}'
    assert resp.choices[0].finish_reason == "stop" and resp.model == "m-1"
    assert resp.usage.prompt_tokens == 1 and resp.usage.completion_tokens == 2
    assert resp.usage.total_tokens == 3
    [call] = server.calls_for("plan")
    assert call.status == 200 and call.body["model"] == "m-1"
    assert call.headers["authorization"] == "Bearer test"


def test_sticky_last_reply(server: FakeOpenAI) -> None:
    server.script("k", "first", Reply(content="last", refusal="nope", prompt_tokens=7))
    got = [_ask(server, "k").choices[0].message for _ in range(4)]
    assert [m.content for m in got] == ["first", "last", "last", "last"]
    assert got[-1].refusal == "nope"
    assert [c.index for c in server.calls] == [0, 1, 2, 3]


def test_default_responder_and_unscripted_key(server: FakeOpenAI) -> None:
    with pytest.raises(openai.InternalServerError, match="no reply scripted"):
        _ask(server, "nobody")
    server.set_default(lambda body: "echo: " + _key(body))
    assert _ask(server, "hi").choices[0].message.content == "echo: hi"


def test_429_carries_retry_after(server: FakeOpenAI) -> None:
    server.script("k", Reply(status=429, error_message="slow down", headers={"Retry-After": "1"}))
    with pytest.raises(openai.RateLimitError, match="slow down") as info:
        _ask(server, "k")
    assert info.value.response.headers["Retry-After"] == "1"
    assert server.calls[0].status == 429


@pytest.mark.parametrize("status,exc", [(500, openai.InternalServerError), (400, openai.BadRequestError)])
def test_http_errors(server: FakeOpenAI, status: int, exc: type[Exception]) -> None:
    server.script("k", Reply(status=status))
    with pytest.raises(exc, match="injected error"):
        _ask(server, "k")


def test_malformed_body(server: FakeOpenAI) -> None:
    server.script("k", Reply(malformed=True))
    with pytest.raises((openai.APIError, ValueError)):
        _ask(server, "k")


def test_reset_is_a_connection_error(server: FakeOpenAI) -> None:
    server.script("k", Reply(reset=True), "ok")
    with pytest.raises(openai.APIConnectionError) as info:
        _ask(server, "k")
    assert not isinstance(info.value, openai.APITimeoutError)
    assert _ask(server, "k").choices[0].message.content == "ok"  # server still healthy
    assert [c.status for c in server.calls] == [0, 200]


def test_hang_times_out(server: FakeOpenAI) -> None:
    server.script("k", Reply(hang=True))
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _ask(server, "k", timeout=0.5)
    assert time.monotonic() - start < 3
    assert server.calls[0].status == 0


def test_stop_releases_hanging_handler() -> None:
    with FakeOpenAI(responder=lambda body: Reply(hang=True)) as fake:
        errors: list[Exception] = []

        def run() -> None:
            try:
                _ask(fake, "x", timeout=10)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        while not fake.calls:
            time.sleep(0.01)
        start = time.monotonic()
    assert time.monotonic() - start < 1.5
    worker.join(2)
    assert isinstance(errors[0], openai.APIConnectionError)


def test_delay_is_recorded(server: FakeOpenAI) -> None:
    server.script("k", Reply(content="late", delay=0.3))
    assert _ask(server, "k").choices[0].message.content == "late"
    [call] = server.calls
    assert call.finished - call.started >= 0.3


def test_concurrent_requests_overlap(server: FakeOpenAI) -> None:
    server.set_default(lambda body: Reply(content="ok", delay=0.3))
    threads = [threading.Thread(target=_ask, args=(server, f"p{i}")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    calls = server.calls
    assert len(calls) == 4 and all(c.status == 200 for c in calls)
    assert max(c.started for c in calls) < min(c.finished for c in calls)


def test_models_health_and_404(server: FakeOpenAI) -> None:
    assert [m.id for m in _client(server).models.list()] == ["fake-model"]
    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one keep-alive socket
    try:
        conn.request("GET", "/health")
        assert json.loads(conn.getresponse().read()) == {"status": "ok"}
        conn.request("POST", "/v1/nope", body=b'{"a": 1}', headers={"Content-Type": "application/json"})
        missing = conn.getresponse()
        assert missing.status == 404 and "error" in json.loads(missing.read())
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_tool_call_reply_shape(server: FakeOpenAI) -> None:
    server.script("k", Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]))
    resp = _ask(server, "k")
    message, choice = resp.choices[0].message, resp.choices[0]
    assert message.content is None and choice.finish_reason == "tool_calls"
    [call] = message.tool_calls or []
    assert call.type == "function" and call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert call.id.startswith("call_") and len(call.id) > len("call_")
    assert resp.usage.completion_tokens > 0


def test_tool_calls_with_content_ids_and_raw_arguments(server: FakeOpenAI) -> None:
    calls = [ToolCall("a", '{"x": 1', id="c1"), ToolCall("b", {"y": [1]}, id="c2")]
    server.script("k", Reply(content="thinking", tool_calls=calls, finish_reason="stop"))
    resp = _ask(server, "k")
    message = resp.choices[0].message
    assert message.content == "thinking" and resp.choices[0].finish_reason == "stop"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("c1", "a", '{"x": 1'), ("c2", "b", '{"y": [1]}'),
    ]


def test_sticky_tool_call_reply_gets_fresh_ids(server: FakeOpenAI) -> None:
    server.script("k", Reply(tool_calls=[ToolCall("add", {})]))
    ids = [(_ask(server, "k").choices[0].message.tool_calls or [])[0].id for _ in range(2)]
    assert ids[0] != ids[1]


def test_react_loop_scripted_per_task_and_step() -> None:
    """A node's turns share one key (`route`), even when the conversation ends with tool results."""
    with FakeOpenAI(key_fn=route) as fake:
        fake.script("node:a", Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2}, id="c1")]), "three")
        fake.script("node:b", "b done")
        client = _client(fake)
        messages: list[dict] = [{"role": "user", "content": "## Your task (id: a)\nadd 1 and 2"}]
        first = client.chat.completions.create(model="m", messages=messages).choices[0].message
        messages.append(first.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": "c1", "content": "3"})
        second = client.chat.completions.create(model="m", messages=messages).choices[0].message
        other = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "## Your task (id: b)\nother"}])
        assert second.content == "three" and other.choices[0].message.content == "b done"
        assert len(fake.calls_for("node:a")) == 2 and len(fake.calls_for("node:b")) == 1
        assert tool_results(fake.calls_for("node:a")[1].body) == {"c1": "3"}
        assert tool_results(fake.calls_for("node:a")[0].body) == {}


def test_route_unchanged_for_plain_requests() -> None:
    assert route({"messages": [{"role": "user", "content": "## Your task (id: x)\ndo"}]}) == "node:x"
    assert route({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "sum up"}]}) == "synthesis"
    assert route({"messages": [], "response_format": {"json_schema": {"name": "replan"}}}) == "replan"
    parts = [{"type": "text", "text": "## Your task (id: y)\n"}]
    assert route({"messages": [{"role": "user", "content": parts}, {"role": "tool", "content": "r"}]}) == "node:y"
