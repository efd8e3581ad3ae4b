"""Tools the model may call: async functions whose JSON-schema parameters come from a Pydantic model or signature."""

from __future__ import annotations

import inspect
import re
import typing
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, create_model
from pydantic_core import to_json

from deskpilot.llm.messages import ToolCall, ToolDefinition

# Covariant: a tool taking ToolContext[Desk] is called with the run's ToolContext[object] holding a Desk.
DepsT = TypeVar("DepsT", covariant=True)
ToolFunction = Callable[..., Awaitable[object]]

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_SECTION_HEADER = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolContext(Generic[DepsT]):
    """Handed to a tool whose first parameter is annotated `ToolContext[...]`; not part of the tool's schema."""

    deps: DepsT
    account_id: uuid.UUID | None
    call: ToolCall
    step: int


class ToolRetry(Exception):
    """Raise from a tool to send the message back to the model as an error result, so it can try again."""


class Tool:
    """An async function the model may call, with its argument model and definition built once.

    The arguments come either from one parameter annotated with a Pydantic model (the function receives
    the validated instance) or from the signature (each annotated parameter becomes a property; Google-style
    "Args:" docstring lines become property descriptions). A first parameter annotated `ToolContext[...]`
    receives the run's context. Build tools once (module level or at startup), not per call.
    """

    __slots__ = ("_single_model", "_takes_ctx", "args_model", "definition", "description", "function", "name")

    def __init__(self, function: ToolFunction, *, name: str | None = None, description: str | None = None) -> None:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"tool {function.__name__!r} must be an async function")
        self.function = function
        self.name = name or function.__name__
        if not _TOOL_NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must match [a-zA-Z0-9_-]{{1,64}}")
        summary, arg_docs = _parse_docstring(inspect.getdoc(function) or "")
        self.description = description if description is not None else summary
        self.args_model, self._takes_ctx, self._single_model = _args_model(function, self.name, arg_docs)
        self.definition = ToolDefinition(
            name=self.name, description=self.description, parameters=self.args_model.model_json_schema()
        )

    def validate(self, arguments: str) -> BaseModel:
        """The model's JSON arguments as the tool's argument model; raises `pydantic.ValidationError`."""
        return self.args_model.model_validate_json(arguments or "{}")

    async def call(self, arguments: str, ctx: ToolContext[object]) -> str:
        """Validate `arguments`, run the function and return its result as text."""
        return await self.run(self.validate(arguments), ctx)

    async def run(self, args: BaseModel, ctx: ToolContext[object]) -> str:
        """Run the function with validated arguments; its result as text (JSON unless it returned a str)."""
        prefix: tuple[object, ...] = (ctx,) if self._takes_ctx else ()
        if self._single_model:
            result = await self.function(*prefix, args)
        else:
            result = await self.function(*prefix, **dict(args))
        if isinstance(result, str):
            return result
        if isinstance(result, BaseModel):
            return result.model_dump_json()
        return to_json(result).decode()

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def tool(function: ToolFunction) -> Tool:
    """Decorator form of `Tool(function)`."""
    return Tool(function)


def _is_context(annotation: object) -> bool:
    return annotation is ToolContext or typing.get_origin(annotation) is ToolContext


def _args_model(function: ToolFunction, tool_name: str, arg_docs: dict[str, str]) -> tuple[type[BaseModel], bool, bool]:
    hints = typing.get_type_hints(function)
    params = list(inspect.signature(function).parameters.values())
    takes_ctx = bool(params) and _is_context(hints.get(params[0].name))
    if takes_ctx:
        params = params[1:]
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs cannot be described to a model")
        if param.name not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {param.name!r} needs a type annotation")
    if len(params) == 1:
        only = hints[params[0].name]
        if isinstance(only, type) and issubclass(only, BaseModel):
            return only, takes_ctx, True
    fields: dict[str, Any] = {}
    for param in params:
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], Field(default, description=arg_docs.get(param.name)))
    model_name = "".join(part.title() for part in tool_name.replace("-", "_").split("_")) + "Args"
    return create_model(model_name, **fields), takes_ctx, False


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary (everything before the first section) and the "Args:" entries of a Google-style docstring."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            section, current = "args", None
            continue
        if _SECTION_HEADER.match(line):
            section, current = "other", None
            continue
        if section is None:
            summary.append(line)
        elif section == "args":
            match = _ARG_LINE.match(line)
            if match:
                current = match.group(1).lstrip("*")
                args[current] = match.group(2).strip()
            elif current is not None and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(summary).strip(), args
