"""The language-model client: the `openai` SDK (async), with errors classified.

With `tools`, the model may answer with tool calls instead of (or besides) text;
they come back as `Completion.tool_calls` in the order the model gave them, and
`Completion.assistant_message()` is the message to append before the results.

One retry layer only: the SDK's own retries are off (`max_retries=0`) and every
failure becomes a `TransientLLMError` (worth retrying: 429, 5xx, timeouts,
dropped connections) or a `PermanentLLMError` (anything else). Prefect does the
backoff. Error messages are built here, from status and body, with the API key
redacted, so no secret reaches a log, a report or a ledger row.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from planner.errors import LLMError, PermanentLLMError, TransientLLMError

__all__ = [
    "Completion",
    "LLMCall",
    "LLMClient",
    "ToolCallRequest",
    "classify_error",
    "parse_retry_after",
    "redact",
]

logger = logging.getLogger("planflow.llm")

_TRANSIENT_STATUS = {408, 409, 425, 429}
_MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class ToolCallRequest:
    """One tool call the model asked for; `arguments` is the raw JSON text it sent (maybe invalid)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """One model turn: its text (may be empty when it calls tools) and its tool calls, in order.

    Plain values only, so it pickles: Prefect persists it as a task result.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    tool_calls: tuple[ToolCallRequest, ...] = ()

    def assistant_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation before the tool results."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


@dataclass(frozen=True)
class LLMCall:
    """One call as the ledger records it: what it was for, what it cost, how it ended."""

    purpose: str
    node_id: str | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    error: str | None = None


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret (and anything that looks like a bearer token) in `text`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return re.sub(r"(?i)(bearer\s+)[^\s\"',;]+", r"\1[redacted]", text)


def parse_retry_after(headers: httpx.Headers | None, cap: float) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or `retry-after-ms`, capped."""
    if headers is None:
        return None
    value: float | None = None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = None
    if value is None and (raw := headers.get("retry-after")) is not None:
        try:
            value = float(raw)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):  # neither seconds nor a date: ignore it
                parsed = None
            value = parsed.timestamp() - time.time() if parsed else None
    if value is None or value != value:  # absent or NaN
        return None
    return min(max(value, 0.0), cap)


def _body_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    try:
        return exc.response.text
    except Exception:  # pragma: no cover - a body that cannot even be read
        return ""


def classify_error(exc: BaseException, *, secrets: Sequence[str] = (), retry_after_cap: float = 60.0) -> LLMError:
    """Map an SDK (or transport) exception to a transient or permanent `LLMError`."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return TransientLLMError("the model call timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return TransientLLMError(redact(f"could not reach the model: {type(cause).__name__}: {cause}", secrets)[:_MAX_ERROR_TEXT])
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        text = redact(" ".join(_body_message(exc).split()), secrets)[:_MAX_ERROR_TEXT]
        message = f"HTTP {status} from the model: {text}" if text else f"HTTP {status} from the model"
        if status in _TRANSIENT_STATUS or status >= 500:
            return TransientLLMError(message, parse_retry_after(exc.response.headers, retry_after_cap))
        return PermanentLLMError(message)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        # A 200 whose body is not a chat completion: a proxy or server glitch.
        return TransientLLMError(redact(f"unreadable response from the model: {type(exc).__name__}", secrets))
    if isinstance(exc, httpx.TransportError):
        return TransientLLMError(redact(f"transport error: {type(exc).__name__}: {exc}", secrets)[:_MAX_ERROR_TEXT])
    return PermanentLLMError(redact(f"{type(exc).__name__}: {exc}", secrets)[:_MAX_ERROR_TEXT])


def _tool_calls(raw: Any) -> tuple[ToolCallRequest, ...]:
    """The SDK's tool calls as plain values; only function calls exist in our `tools` format."""
    calls = []
    for call in raw or ():
        function = getattr(call, "function", None)
        if function is None:  # a "custom" tool call: we never offer such tools
            raise PermanentLLMError(
                f"the model made a {getattr(call, 'type', 'non-function')!r} tool call; only function tools are offered"
            )
        calls.append(ToolCallRequest(id=call.id, name=function.name, arguments=function.arguments or ""))
    return tuple(calls)


class LLMClient:
    """An OpenAI-compatible chat client that classifies errors and reports usage.

    `on_call` receives an `LLMCall` after every attempt, successful or not; the
    flow uses it to keep the ledger's per-call record.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float = 120.0,
        retry_after_cap: float = 60.0,
        on_call: Callable[[LLMCall], None] | None = None,
    ) -> None:
        self.model = model
        self._api_key = api_key
        self._retry_after_cap = retry_after_cap
        self._on_call = on_call
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        purpose: str,
        node_id: str | None = None,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "plan",
        tools: list[dict[str, Any]] | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Completion:
        """One chat completion; with `json_schema`, strict structured output is requested.

        `tools` is the OpenAI `tools` list; an empty list sends nothing (the API rejects `[]`).
        """
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = tools
        if json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "strict": True, "schema": json_schema},
            }
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if extra_body:  # server-specific fields, e.g. llama.cpp's sampling knobs or `stop`
            kwargs["extra_body"] = extra_body
        started = time.monotonic()
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, **kwargs  # type: ignore[arg-type]
            )
            completion = self._unpack(response)
        except Exception as exc:
            error = classify_error(exc, secrets=[self._api_key], retry_after_cap=self._retry_after_cap)
            self._record(purpose, node_id, 0, 0, started, str(error))
            raise error from None
        self._record(purpose, node_id, completion.prompt_tokens, completion.completion_tokens, started, None)
        return completion

    def _unpack(self, response: Any) -> Completion:
        if not getattr(response, "choices", None):
            raise TransientLLMError("the model's response had no choices")
        choice = response.choices[0]
        message = choice.message
        if getattr(message, "refusal", None):
            raise PermanentLLMError(f"the model refused: {message.refusal[:_MAX_ERROR_TEXT]}")
        if choice.finish_reason == "content_filter":
            raise PermanentLLMError("the model's answer was blocked by its content filter")
        text = message.content or ""
        tool_calls = _tool_calls(getattr(message, "tool_calls", None))
        if not tool_calls and not text.strip():
            raise PermanentLLMError("the model returned an empty answer")
        usage = response.usage
        return Completion(
            text=text,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
            tool_calls=tool_calls,
        )

    def _record(self, purpose: str, node_id: str | None, p: int, c: int, started: float, error: str | None) -> None:
        # Bookkeeping must never cost an answer already paid for (or hide the model's error).
        if self._on_call is not None:
            try:
                self._on_call(LLMCall(purpose, node_id, p, c, time.monotonic() - started, error))
            except Exception as exc:
                logger.warning("could not record a model call (%s): %s", purpose, type(exc).__name__)
