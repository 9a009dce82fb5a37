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

from .fake_openai import FakeOpenAI, Reply, json_reply


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
