"""A user's typed Python function as a `Tool`: `@tool` and `FunctionTool`.

The signature is the contract. A pydantic model built from it gives the JSON
schema the model sees and validates the model's arguments before anything runs,
so a bad call costs one observation, not a side effect. The docstring gives the
description and, through its "Args:" section, each parameter's description.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any, overload

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from planner.tools.base import NAME_PATTERN, Tool, ToolArgumentError, ToolCallError, ToolSetupError, render_result

__all__ = ["FunctionTool", "tool"]

IDEMPOTENCY_KEY = "idempotency_key"
"""A parameter with this name is filled by the engine, never by the model."""

ERROR_MESSAGE_MAX = 500
"""An exception's message is cut here: the model needs the gist, not a traceback."""

_NAME_RE = re.compile(NAME_PATTERN)


def _description_in(annotation: Any) -> bool:
    """Whether `Annotated[T, Field(description=...)]` already describes the parameter."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in typing.get_args(annotation)[1:])


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated `title`s: noise for the model.

    Only string-valued `title` keys go; a property *named* "title" maps to a dict.
    Literal values (`default`, `enum`, ...) are left untouched.
    """
    if isinstance(schema, dict):
        return {
            k: (v if k in ("default", "enum", "const", "examples") else _strip_titles(v))
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _describe_errors(name: str, error: ValidationError, allowed: list[str]) -> str:
    """One line per bad field, saying what was expected. Input values are never echoed:
    the model knows what it sent, and an argument (a header, a token) may be a secret."""
    problems: list[str] = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        if err["type"] == "missing":
            problems.append(f"{field!r} is required")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field!r} is not an argument of {name} (it takes: {', '.join(allowed) or 'nothing'})")
        else:
            problems.append(f"{field!r}: {err['msg']}")
    return f"bad arguments for {name}: " + "; ".join(problems)


class FunctionTool(Tool):
    """A Python function (sync or async) offered as a tool; still callable as the function."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        idempotent: bool = False,
        origin: str | None = None,
    ) -> None:
        fname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        self.name = name or getattr(func, "__name__", "")
        if not _NAME_RE.match(self.name):
            raise ToolSetupError(
                f"tool name {self.name!r} (function {fname}) must match {NAME_PATTERN}; pass @tool(name=...)"
            )
        functools.update_wrapper(self, func)
        self._func = func
        self._is_async = inspect.iscoroutinefunction(func)
        self.idempotent = idempotent
        self.origin = origin or f"module {getattr(func, '__module__', None) or '__main__'}"

        doc = docstring_parser.parse(inspect.getdoc(func) or "")
        if description is None:
            description = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        self.description = description.strip()
        self._model, self._positional, self._params = self._build_model(func, fname, doc)
        self.takes_idempotency_key = IDEMPOTENCY_KEY in self._params
        self.parameters = self._schema()

    def _build_model(
        self, func: Callable[..., Any], fname: str, doc: docstring_parser.Docstring
    ) -> tuple[type[BaseModel], list[str], dict[str, str]]:
        """The arguments model (fields aliased so any parameter name works, even `json`
        or `model_config`), the positional-only names, and param name -> field name."""
        try:
            sig = inspect.signature(func)
            hints = typing.get_type_hints(func, include_extras=True)
        except (TypeError, ValueError, NameError) as e:
            raise ToolSetupError(f"cannot read the signature of {fname}: {type(e).__name__}: {e}") from e
        param_docs = {p.arg_name: p.description for p in doc.params if p.description}
        fields: dict[str, Any] = {}
        positional: list[str] = []
        params: dict[str, str] = {}
        for i, p in enumerate(sig.parameters.values()):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ToolSetupError(f"{fname} takes *{p.name}: a tool needs named, typed parameters")
            if p.kind is p.POSITIONAL_ONLY:
                positional.append(p.name)
            field = f"p{i}"
            params[p.name] = field
            if p.name == IDEMPOTENCY_KEY:
                continue
            annotation = hints.get(p.name, Any)
            info: dict[str, Any] = {"alias": p.name}
            if p.default is not p.empty:
                info["default"] = p.default
            if p.name in param_docs and not _description_in(annotation):
                info["description"] = param_docs[p.name]
            fields[field] = (annotation, Field(**info))
        try:
            model = create_model(  # type: ignore[call-overload]
                f"{self.name}_arguments",
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
                **fields,
            )
        except Exception as e:  # pydantic's schema errors have many types
            raise ToolSetupError(f"cannot build an argument schema for {fname}: {_one_line(e)}") from e
        return model, positional, params

    def _schema(self) -> dict[str, Any]:
        try:
            schema = _strip_titles(self._model.model_json_schema(by_alias=True))
        except Exception as e:
            raise ToolSetupError(f"tool {self.name}: its argument types have no JSON schema: {_one_line(e)}") from e
        schema.setdefault("properties", {})
        schema.setdefault("required", [])
        return schema

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments, checked and converted to the parameters' types (parameter name -> value)."""
        if not isinstance(arguments, Mapping):
            raise ToolArgumentError(
                f"bad arguments for {self.name}: expected a JSON object, got {type(arguments).__name__}"
            )
        try:
            validated = self._model.model_validate(dict(arguments))
        except ValidationError as e:
            raise ToolArgumentError(_describe_errors(self.name, e, list(self.parameters["properties"]))) from None
        return {p: getattr(validated, f) for p, f in self._params.items() if p != IDEMPOTENCY_KEY}

    async def invoke(self, arguments: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        values = self.validate(arguments)
        if self.takes_idempotency_key:
            values[IDEMPOTENCY_KEY] = idempotency_key
        args = [values.pop(p) for p in self._positional]
        try:
            if self._is_async:
                result = await self._func(*args, **values)
            else:  # a thread keeps a slow sync tool from stalling the other nodes
                result = await asyncio.to_thread(self._func, *args, **values)
                if inspect.isawaitable(result):  # a plain function that returns a coroutine
                    result = await result
        except ToolCallError:
            raise  # the tool already wrote the message the model should read
        except Exception as e:
            raise ToolCallError(f"{self.name} failed: {_one_line(e)}") from e
        return render_result(result)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Decorated at module level, the tool *is* the module attribute: pickle it by
        # reference (the function itself cannot be found by name any more).
        module = sys.modules.get(getattr(self, "__module__", ""))
        target: Any = module
        for part in getattr(self, "__qualname__", "").split("."):
            target = getattr(target, part, None)
        if target is self:
            return self.__qualname__
        return (_rebuild, (self._func, self.name, self.description, self.idempotent, self.origin))


def _rebuild(func: Callable[..., Any], name: str, description: str, idempotent: bool, origin: str) -> FunctionTool:
    return FunctionTool(func, name=name, description=description, idempotent=idempotent, origin=origin)


def _one_line(e: BaseException) -> str:
    """`Type: message` on one line, capped."""
    text = " ".join(str(e).split())
    if len(text) > ERROR_MESSAGE_MAX:
        text = text[: ERROR_MESSAGE_MAX - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@overload
def tool(func: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(
    *, idempotent: bool = False, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...
def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    idempotent: bool = False,
    name: str | None = None,
    description: str | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a typed function a tool, bare (`@tool`) or with options (`@tool(idempotent=True)`).

    `idempotent=False` is the default: after a crash mid-call, an unmarked tool is
    not re-run, since Planflow cannot know whether its side effect happened.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, idempotent=idempotent)

    return wrap(func) if func is not None else wrap
