"""`planner.llm`: the async client against a real local OpenAI-compatible HTTP server.

pytest-asyncio is not a dependency: each test drives its coroutine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import pickle
import time
import traceback
from typing import Any

import httpx
import pytest
from support.fake_openai import FakeOpenAI, Reply, ToolCall

from planner.errors import LLMError, PermanentLLMError, TransientLLMError
from planner.llm import Completion, LLMCall, LLMClient, ToolCallRequest, parse_retry_after, redact
from planner.models import Plan, strict_json_schema

SECRET_KEY = "sk-SECRETMARKER123"

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello world"}]


def run_call(
    server: FakeOpenAI,
    reply: Reply | str,
    *,
    timeout: float = 5.0,
    retry_after_cap: float = 60.0,
    api_key: str = SECRET_KEY,
    **kwargs: Any,
) -> tuple[Completion | LLMError, list[LLMCall]]:
    """One `complete()` against `server` answering `reply`; returns the result or the error."""
    server.set_default(lambda body: reply)
    calls: list[LLMCall] = []

    async def go() -> Completion | LLMError:
        client = LLMClient(
            base_url=server.base_url,
            api_key=api_key,
            model="fake-model-1",
            timeout=timeout,
            retry_after_cap=retry_after_cap,
            on_call=calls.append,
        )
        try:
            return await client.complete(MESSAGES, purpose=kwargs.pop("purpose", "node"), **kwargs)
        except LLMError as exc:
            return exc
        finally:
            await client.aclose()

    return asyncio.run(go()), calls


class TestSuccess:
    def test_text_tokens_and_on_call(self, fake_openai: FakeOpenAI) -> None:
        reply = Reply(content="hello world", prompt_tokens=11, completion_tokens=3)
        result, calls = run_call(fake_openai, reply, node_id="t1")
        assert result == Completion(text="hello world", prompt_tokens=11, completion_tokens=3, finish_reason="stop")
        [call] = calls
        assert isinstance(call, LLMCall)
        assert (call.purpose, call.node_id, call.prompt_tokens, call.completion_tokens, call.error) == (
            "node", "t1", 11, 3, None,
        )
        assert 0 <= call.seconds < 5

    def test_request_body(self, fake_openai: FakeOpenAI) -> None:
        run_call(fake_openai, "ok", purpose="plan", max_tokens=77)
        [recorded] = fake_openai.calls
        assert recorded.body["model"] == "fake-model-1"
        assert recorded.body["messages"] == MESSAGES
        assert recorded.body["max_tokens"] == 77
        assert "response_format" not in recorded.body
        assert recorded.headers.get("authorization") == f"Bearer {SECRET_KEY}"

    def test_json_schema_sent_as_strict_response_format(self, fake_openai: FakeOpenAI) -> None:
        schema = strict_json_schema(Plan)
        result, _ = run_call(fake_openai, '{"tasks": []}', purpose="plan", json_schema=schema, schema_name="plan")
        assert isinstance(result, Completion)
        [recorded] = fake_openai.calls
        assert recorded.body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "plan", "strict": True, "schema": schema},
        }
        assert "max_tokens" not in recorded.body

    def test_length_finish_reason_is_passed_through(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(content="partial", finish_reason="length"))
        assert isinstance(result, Completion) and result.finish_reason == "length"


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
}


class TestToolCalls:
    def test_tool_call_parsed_and_empty_content_accepted(self, fake_openai: FakeOpenAI) -> None:
        reply = Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3}, id="call_1")])
        result, calls = run_call(fake_openai, reply, tools=[ADD_TOOL], node_id="t1")
        assert isinstance(result, Completion)
        assert result.tool_calls == (ToolCallRequest(id="call_1", name="add", arguments='{"a": 2, "b": 3}'),)
        assert (result.text, result.finish_reason) == ("", "tool_calls")
        assert result.completion_tokens > 0 and calls[0].error is None

    def test_tools_sent_in_the_request(self, fake_openai: FakeOpenAI) -> None:
        run_call(fake_openai, Reply(tool_calls=[ToolCall("add", {})]), tools=[ADD_TOOL])
        [recorded] = fake_openai.calls
        assert recorded.body["tools"] == [ADD_TOOL]

    @pytest.mark.parametrize("tools", [None, []])
    def test_no_tools_key_without_tools(self, fake_openai: FakeOpenAI, tools: list[dict[str, Any]] | None) -> None:
        run_call(fake_openai, "ok", tools=tools)
        assert "tools" not in fake_openai.calls[0].body

    def test_parallel_calls_keep_their_order(self, fake_openai: FakeOpenAI) -> None:
        reply = Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1}), ToolCall("lookup", '{"q": "x"}', id="c2")])
        result, _ = run_call(fake_openai, reply, tools=[ADD_TOOL])
        assert isinstance(result, Completion)
        first, second = result.tool_calls
        assert (first.name, json.loads(first.arguments)) == ("add", {"a": 1, "b": 1})
        assert first.id.startswith("call_") and first.id != second.id
        assert second == ToolCallRequest(id="c2", name="lookup", arguments='{"q": "x"}')

    def test_content_and_tool_calls(self, fake_openai: FakeOpenAI) -> None:
        reply = Reply(content="let me add", tool_calls=[ToolCall("add", {"a": 1}, id="c1")])
        result, _ = run_call(fake_openai, reply, tools=[ADD_TOOL])
        assert isinstance(result, Completion)
        assert result.text == "let me add" and [c.name for c in result.tool_calls] == ["add"]
        assert result.assistant_message() == {
            "role": "assistant",
            "content": "let me add",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}],
        }

    def test_invalid_json_arguments_are_passed_through_raw(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(tool_calls=[ToolCall("add", "{not json")]), tools=[ADD_TOOL])
        assert isinstance(result, Completion) and result.tool_calls[0].arguments == "{not json"

    def test_assistant_message_without_tool_calls(self) -> None:
        completion = Completion(text="done", prompt_tokens=1, completion_tokens=1, finish_reason="stop")
        assert completion.tool_calls == ()
        assert completion.assistant_message() == {"role": "assistant", "content": "done"}

    def test_completion_pickles(self) -> None:
        completion = Completion("", 3, 4, "tool_calls", (ToolCallRequest("c1", "add", '{"a": 1}'),))
        assert pickle.loads(pickle.dumps(completion)) == completion

    def test_conversation_round_trip(self, fake_openai: FakeOpenAI) -> None:
        """The assistant message and a tool result go back as the API expects them."""
        turns: list[Reply | str] = [Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3}, id="c1")]), "the sum is 5"]
        fake_openai.set_default(lambda body: turns.pop(0))

        async def go() -> tuple[Completion, Completion]:
            client = LLMClient(base_url=fake_openai.base_url, api_key="k", model="m")
            try:
                messages: list[dict[str, Any]] = [{"role": "user", "content": "add 2 and 3"}]
                first = await client.complete(messages, purpose="node", tools=[ADD_TOOL])
                messages += [first.assistant_message(), {"role": "tool", "tool_call_id": "c1", "content": "5"}]
                return first, await client.complete(messages, purpose="node", tools=[ADD_TOOL])
            finally:
                await client.aclose()

        first, second = asyncio.run(go())
        assert first.tool_calls and not second.tool_calls and second.text == "the sum is 5"
        sent = fake_openai.calls[1].body["messages"]
        assert sent[1] == first.assistant_message() and sent[2]["role"] == "tool"


class TestTransientErrors:
    def test_429_with_retry_after_seconds(self, fake_openai: FakeOpenAI) -> None:
        result, calls = run_call(fake_openai, Reply(status=429, headers={"Retry-After": "2"}), node_id="t9")
        assert isinstance(result, TransientLLMError)
        assert result.retry_after == 2.0
        assert "HTTP 429" in str(result)
        [call] = calls
        assert call.error == str(result) and call.node_id == "t9"
        assert (call.prompt_tokens, call.completion_tokens) == (0, 0)

    def test_429_without_retry_after(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(status=429))
        assert isinstance(result, TransientLLMError) and result.retry_after is None

    def test_absurd_retry_after_is_capped(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(status=429, headers={"Retry-After": "99999"}), retry_after_cap=7.5)
        assert isinstance(result, TransientLLMError) and result.retry_after == 7.5

    def test_retry_after_http_date_in_the_past_is_zero(self, fake_openai: FakeOpenAI) -> None:
        past = email.utils.formatdate(time.time() - 3600, usegmt=True)
        result, _ = run_call(fake_openai, Reply(status=429, headers={"Retry-After": past}))
        assert isinstance(result, TransientLLMError) and result.retry_after == 0.0

    def test_retry_after_ms_wins(self, fake_openai: FakeOpenAI) -> None:
        reply = Reply(status=503, headers={"retry-after-ms": "1500", "Retry-After": "9"})
        result, _ = run_call(fake_openai, reply)
        assert isinstance(result, TransientLLMError) and result.retry_after == 1.5

    @pytest.mark.parametrize("status", [500, 502, 503, 408, 409])
    def test_server_errors(self, fake_openai: FakeOpenAI, status: int) -> None:
        result, _ = run_call(fake_openai, Reply(status=status, error_message="overloaded"))
        assert isinstance(result, TransientLLMError)
        assert f"HTTP {status}" in str(result) and "overloaded" in str(result)

    def test_hang_times_out(self, fake_openai: FakeOpenAI) -> None:
        started = time.monotonic()
        result, calls = run_call(fake_openai, Reply(hang=True), timeout=0.5)
        assert isinstance(result, TransientLLMError)
        assert "timed out" in str(result)
        assert time.monotonic() - started < 4
        assert calls[0].error == str(result) and calls[0].seconds >= 0.4

    def test_connection_reset(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(reset=True))
        assert isinstance(result, TransientLLMError)
        assert "could not reach the model" in str(result)

    def test_malformed_body(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(malformed=True))
        assert isinstance(result, TransientLLMError)
        assert "unreadable response" in str(result)

    def test_nothing_listening(self) -> None:
        with FakeOpenAI() as server:
            base_url = server.base_url
        calls: list[LLMCall] = []

        async def go() -> Any:
            client = LLMClient(base_url=base_url, api_key="k", model="m", timeout=2, on_call=calls.append)
            try:
                return await client.complete(MESSAGES, purpose="node")
            except LLMError as exc:
                return exc
            finally:
                await client.aclose()

        result = asyncio.run(go())
        assert isinstance(result, TransientLLMError) and len(calls) == 1

    def test_garbage_retry_after_is_still_transient(self, fake_openai: FakeOpenAI) -> None:
        result, calls = run_call(fake_openai, Reply(status=429, headers={"Retry-After": "soon"}))
        assert isinstance(result, TransientLLMError) and result.retry_after is None
        assert len(calls) == 1


class TestPermanentErrors:
    @pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
    def test_client_errors(self, fake_openai: FakeOpenAI, status: int) -> None:
        result, calls = run_call(fake_openai, Reply(status=status, error_message="model not found"))
        assert isinstance(result, PermanentLLMError) and not isinstance(result, TransientLLMError)
        assert f"HTTP {status}" in str(result) and "model not found" in str(result)
        assert calls[0].error == str(result)

    def test_refusal(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(content=None, refusal="I can't help with that"))
        assert isinstance(result, PermanentLLMError)
        assert "refused" in str(result) and "I can't help with that" in str(result)

    @pytest.mark.parametrize("content", [None, "", "   \n"])
    def test_empty_content(self, fake_openai: FakeOpenAI, content: str | None) -> None:
        result, calls = run_call(fake_openai, Reply(content=content))
        assert isinstance(result, PermanentLLMError)
        assert "empty answer" in str(result)
        assert calls[0].error == str(result)

    def test_content_filter(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(content="x", finish_reason="content_filter"))
        assert isinstance(result, PermanentLLMError) and "content filter" in str(result)

    def test_long_error_body_is_truncated(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(status=400, error_message="x" * 5000))
        assert isinstance(result, PermanentLLMError) and len(str(result)) < 400


class TestSecretsNeverLeak:
    def test_key_echoed_in_400_is_redacted(self, fake_openai: FakeOpenAI) -> None:
        result, calls = run_call(fake_openai, Reply(status=400, error_message=f"bad key {SECRET_KEY}"))
        assert isinstance(result, PermanentLLMError)
        assert "HTTP 400" in str(result) and "[redacted]" in str(result)
        assert "SECRETMARKER" not in str(result)
        assert calls[0].error is not None and "SECRETMARKER" not in calls[0].error
        assert "SECRETMARKER" not in repr(result) and "SECRETMARKER" not in str(result.args)

    def test_key_echoed_in_429_is_redacted(self, fake_openai: FakeOpenAI) -> None:
        result, calls = run_call(fake_openai, Reply(status=429, error_message=f"slow down, {SECRET_KEY}"))
        assert isinstance(result, TransientLLMError)
        assert "SECRETMARKER" not in str(result) and "SECRETMARKER" not in (calls[0].error or "")

    def test_formatted_traceback_hides_the_original_sdk_error(self, fake_openai: FakeOpenAI) -> None:
        result, _ = run_call(fake_openai, Reply(status=400, error_message=f"bad key {SECRET_KEY}"))
        assert isinstance(result, LLMError)
        text = "".join(traceback.format_exception(result))
        assert "SECRETMARKER" not in text

    def test_bearer_tokens_redacted(self) -> None:
        assert redact("Authorization: Bearer abc.def-123 rest", []) == "Authorization: Bearer [redacted] rest"
        assert redact("key sk-1234 and sk-1234", ["sk-1234"]) == "key [redacted] and [redacted]"
        assert redact("short ab", ["ab"]) == "short ab"  # too short to be a key


class TestParseRetryAfter:
    def test_values(self) -> None:
        assert parse_retry_after(None, 60) is None
        assert parse_retry_after(httpx.Headers({}), 60) is None
        assert parse_retry_after(httpx.Headers({"retry-after": "3.5"}), 60) == 3.5
        assert parse_retry_after(httpx.Headers({"retry-after": "-4"}), 60) == 0.0
        assert parse_retry_after(httpx.Headers({"retry-after": "nan"}), 60) is None
        assert parse_retry_after(httpx.Headers({"retry-after": "500"}), 60) == 60.0

    def test_future_http_date(self) -> None:
        future = email.utils.formatdate(time.time() + 30, usegmt=True)
        value = parse_retry_after(httpx.Headers({"retry-after": future}), 60)
        assert value is not None and 25 <= value <= 31
