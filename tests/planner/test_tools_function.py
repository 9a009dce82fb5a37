"""`@tool` and `FunctionTool`: schema from the signature and docstring, validation
before the call, sync and async functions, errors the model can read."""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Annotated, Literal

import pytest
from pydantic import Field

from planner.tools import FunctionTool, Tool, ToolArgumentError, ToolCallError, ToolSetupError, tool


@tool
def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Exact integer addition.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool(idempotent=True, name="greet-user", description="Say hello.")
async def greet(name: Annotated[str, Field(description="Who to greet.")], punctuation: Literal["!", "."] = "!") -> str:
    """Ignored: the description option wins.

    Args:
        name: Not used either: Annotated wins.
    """
    await asyncio.sleep(0)
    return f"hello {name}{punctuation}"


@tool
def pay(amount: float, idempotency_key: str | None = None) -> dict[str, object]:
    """Pay an amount (once per key)."""
    return {"amount": amount, "key": idempotency_key}


@tool
def explode(reason: str) -> None:
    """Always fails."""
    raise ValueError(f"boom: {reason}")


class Opaque:
    """A type pydantic has no schema for."""


def run(coro):
    return asyncio.run(coro)


class TestDecorator:
    def test_bare_and_with_options_make_tools(self) -> None:
        assert isinstance(add, FunctionTool) and isinstance(add, Tool)
        assert (add.name, add.idempotent, add.origin) == ("add", False, f"module {__name__}")
        assert (greet.name, greet.idempotent, greet.description) == ("greet-user", True, "Say hello.")

    def test_still_callable_like_the_function(self) -> None:
        assert add(1, 2) == 3
        assert add.__name__ == "add" and "Add two integers" in add.__doc__
        assert run(greet("ann")) == "hello ann!"

    def test_bad_name_fails_at_decoration_naming_the_function(self) -> None:
        def f(x: int) -> int:
            return x

        with pytest.raises(ToolSetupError, match=r"'bad name!'.*function .*f"):
            tool(name="bad name!")(f)

    def test_star_args_refused(self) -> None:
        def f(*items: int) -> int:
            return 0

        with pytest.raises(ToolSetupError, match=r"\*items"):
            tool(f)

    def test_untypable_parameter_refused(self) -> None:
        def f(thing: Opaque) -> None:
            pass

        with pytest.raises(ToolSetupError, match="cannot build an argument schema for .*f: "):
            tool(f)

    def test_unresolvable_annotation_refused(self) -> None:
        def f(thing: Missing) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass

        with pytest.raises(ToolSetupError, match="signature of .*f: NameError: name 'Missing' is not defined"):
            tool(f)

    def test_pickles_by_reference_when_module_level(self) -> None:
        assert pickle.loads(pickle.dumps(add)) is add


class TestSchema:
    def test_types_defaults_required_and_docstring_descriptions(self) -> None:
        assert add.parameters == {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "The first number."},
                "b": {"type": "integer", "default": 2, "description": "The second number."},
            },
            "required": ["a"],
            "additionalProperties": False,
        }
        assert add.description == "Add two integers.\n\nExact integer addition."
        assert add.summary == "Add two integers."

    def test_annotated_description_wins_over_docstring(self) -> None:
        props = greet.parameters["properties"]
        assert props["name"] == {"type": "string", "description": "Who to greet."}
        assert props["punctuation"] == {"enum": ["!", "."], "type": "string", "default": "!"}

    def test_no_titles_and_a_property_named_title_survives(self) -> None:
        def f(title: str, json: bool = False, model_config: int = 0) -> str:
            """Echo a title.

            Args:
                title: The heading.
            """
            return title

        t = tool(f)
        assert "title" not in t.parameters
        assert t.parameters["properties"]["title"] == {"type": "string", "description": "The heading."}
        assert list(t.parameters["properties"]) == ["title", "json", "model_config"]
        assert run(t.invoke({"title": "x", "json": True, "model_config": 3})) == "x"

    def test_numpy_style_docstring(self) -> None:
        def f(x: float) -> float:
            """Halve a number.

            Parameters
            ----------
            x : float
                The number to halve.
            """
            return x / 2

        t = tool(f)
        assert t.description == "Halve a number."
        assert t.parameters["properties"]["x"]["description"] == "The number to halve."

    def test_openai_tool_shape(self) -> None:
        spec = add.openai_tool()
        assert spec["type"] == "function"
        assert spec["function"]["name"] == "add"
        assert spec["function"]["parameters"]["type"] == "object"

    def test_idempotency_key_is_not_in_the_schema(self) -> None:
        assert pay.takes_idempotency_key is True
        assert add.takes_idempotency_key is False
        assert list(pay.parameters["properties"]) == ["amount"]
        assert pay.parameters["required"] == ["amount"]


class TestInvoke:
    def test_sync_converts_and_renders(self) -> None:
        assert run(add.invoke({"a": "40", "b": 2})) == "42"
        assert run(add.invoke({"a": 1})) == "3"

    def test_sync_runs_off_the_event_loop_thread(self) -> None:
        seen: list[int] = []

        @tool
        def where() -> str:
            """Which thread runs me."""
            seen.append(threading.get_ident())
            return "ok"

        async def go() -> str:
            result = await where.invoke({})
            seen.append(threading.get_ident())
            return result

        assert run(go()) == "ok"
        assert seen[0] != seen[1]

    def test_async_is_awaited(self) -> None:
        assert run(greet.invoke({"name": "bo", "punctuation": "."})) == "hello bo."

    def test_a_sync_function_returning_a_coroutine_is_awaited(self) -> None:
        t = FunctionTool(lambda name: greet(name), name="indirect")
        assert run(t.invoke({"name": "cy"})) == "hello cy!"

    def test_positional_only_parameters(self) -> None:
        def f(x: int, /, y: int = 1) -> int:
            return x - y

        assert run(tool(f).invoke({"x": 5, "y": 2})) == "3"

    def test_idempotency_key_passed_through(self) -> None:
        out = run(pay.invoke({"amount": 9.5}, idempotency_key="run1/n1/3/0"))
        assert out == '{"amount": 9.5, "key": "run1/n1/3/0"}'

    def test_model_cannot_set_the_idempotency_key(self) -> None:
        with pytest.raises(ToolArgumentError, match="'idempotency_key' is not an argument of pay"):
            run(pay.invoke({"amount": 1, "idempotency_key": "mine"}))


class TestArgumentErrors:
    def test_wrong_type_names_the_field_and_the_type(self) -> None:
        with pytest.raises(ToolArgumentError) as info:
            run(add.invoke({"a": "forty"}))
        assert str(info.value) == (
            "bad arguments for add: 'a': Input should be a valid integer, unable to parse string as an integer"
        )

    def test_missing_and_extra_are_both_reported(self) -> None:
        with pytest.raises(ToolArgumentError) as info:
            run(add.invoke({"b": 1, "c": 3}))
        message = str(info.value)
        assert "'a' is required" in message
        assert "'c' is not an argument of add (it takes: a, b)" in message
        assert "\n" not in message

    def test_enum_violation(self) -> None:
        with pytest.raises(ToolArgumentError, match=r"'punctuation': Input should be '!' or '\.'"):
            run(greet.invoke({"name": "x", "punctuation": "?"}))

    def test_not_an_object(self) -> None:
        with pytest.raises(ToolArgumentError, match="expected a JSON object, got list"):
            run(add.invoke([1, 2]))  # type: ignore[arg-type]

    def test_nothing_runs_when_arguments_are_bad(self) -> None:
        calls: list[int] = []

        @tool
        def count(n: int) -> int:
            """Count."""
            calls.append(n)
            return n

        with pytest.raises(ToolArgumentError):
            run(count.invoke({"n": "x"}))
        assert calls == []

    def test_input_values_are_not_echoed(self) -> None:
        @tool
        def send(headers: dict[str, str]) -> str:
            """Send."""
            return "sent"

        with pytest.raises(ToolArgumentError) as info:
            run(send.invoke({"headers": {"Authorization": 12345678}}))
        assert "headers.Authorization" in str(info.value)
        assert "12345678" not in str(info.value)


class TestCallErrors:
    def test_exception_becomes_tool_call_error(self) -> None:
        with pytest.raises(ToolCallError) as info:
            run(explode.invoke({"reason": "no fuel"}))
        assert str(info.value) == "explode failed: ValueError: boom: no fuel"
        assert not isinstance(info.value, ToolArgumentError)
        assert isinstance(info.value.__cause__, ValueError)

    def test_long_messages_are_capped_to_one_line(self) -> None:
        @tool
        async def noisy() -> None:
            """Fails loudly."""
            raise RuntimeError("line\n" * 400)

        with pytest.raises(ToolCallError) as info:
            run(noisy.invoke({}))
        message = str(info.value)
        assert message.startswith("noisy failed: RuntimeError: line line")
        assert "\n" not in message and len(message) < 600 and message.endswith("...")

    def test_a_tool_call_error_raised_by_the_tool_is_kept(self) -> None:
        @tool
        def picky() -> None:
            """Refuses."""
            raise ToolCallError("try again tomorrow")

        with pytest.raises(ToolCallError, match="^try again tomorrow$"):
            run(picky.invoke({}))
