"""Tool calling: schemas from signatures and models, the tool loop, bad arguments, and the step limit."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
from pydantic import BaseModel, Field

from deskpilot.errors import NotFound
from deskpilot.llm import (
    LLM,
    Message,
    Tool,
    ToolContext,
    ToolFailed,
    ToolRetry,
    ToolStepLimitExceeded,
    tool,
)
from deskpilot.llm.testing import Reply, ScriptedModel, tool_call
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, FakeToolCall, text_reply, tool_reply

ACCOUNT = uuid.UUID("00000000-0000-0000-0000-00000000000a")


@dataclass
class Desk:
    tickets: dict[int, str]
    looked_up: list[int]


@tool
async def find_ticket(ctx: ToolContext[Desk], ticket_id: int, include_notes: bool = False) -> dict[str, object]:
    """Find a ticket by its number.

    Args:
        ticket_id: The PSA ticket number.
        include_notes: Whether to include the ticket's notes.
    """
    ctx.deps.looked_up.append(ticket_id)
    if ticket_id not in ctx.deps.tickets:
        raise ToolRetry(f"no ticket {ticket_id}; ask the engineer for the right number")
    return {"id": ticket_id, "summary": ctx.deps.tickets[ticket_id], "notes": [] if include_notes else None}


class NoteArgs(BaseModel):
    ticket_id: int
    text: str = Field(description="The note to add, in Markdown.")


@tool
async def add_note(args: NoteArgs) -> str:
    """Add an internal note to a ticket."""
    return f"note added to {args.ticket_id}"


@tool
async def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


@tool
async def missing(ticket_id: int) -> str:
    """Raises a deskpilot error, which passes through unchanged."""
    raise NotFound(f"ticket {ticket_id!r} not found")


def test_schema_from_signature_and_docstring() -> None:
    definition = find_ticket.definition
    assert definition.name == "find_ticket"
    assert definition.description == "Find a ticket by its number."
    params = definition.parameters
    assert params["required"] == ["ticket_id"]
    properties = params["properties"]
    assert isinstance(properties, dict)
    assert properties["ticket_id"]["type"] == "integer"
    assert properties["ticket_id"]["description"] == "The PSA ticket number."
    assert properties["include_notes"]["default"] is False
    assert "ctx" not in properties


def test_schema_from_a_pydantic_model() -> None:
    params = add_note.definition.parameters
    assert params["required"] == ["ticket_id", "text"]
    assert params["properties"]["text"]["description"] == "The note to add, in Markdown."  # type: ignore[index]


def test_tools_must_be_async_and_annotated() -> None:
    def sync_tool(x: int) -> int:
        return x

    async def untyped(x) -> str:  # type: ignore[no-untyped-def]
        return str(x)

    with pytest.raises(TypeError, match="async"):
        Tool(sync_tool)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a type annotation"):
        Tool(untyped)


async def test_tool_loop_runs_tools_and_returns_the_answer() -> None:
    model = ScriptedModel(
        [
            Reply.calls(tool_call("find_ticket", {"ticket_id": 7}, id="c1"), text="Let me look."),
            Reply.calls(tool_call("add_note", {"ticket_id": 7, "text": "Checked VPN"}, id="c2")),
            "Ticket 7 is about the VPN; I added a note.",
        ]
    )
    desk = Desk({7: "VPN drops"}, [])

    result = await LLM.for_model(model).run_tools(
        "agent", "What is ticket 7 about?", [find_ticket, add_note], account_id=ACCOUNT, deps=desk
    )

    assert result.value == "Ticket 7 is about the VPN; I added a note."
    assert desk.looked_up == [7]
    assert result.usage.requests == 3
    assert [m.role for m in result.messages] == ["assistant", "tool", "assistant", "tool", "assistant"]
    first_result = result.messages[1]
    assert first_result.tool_call_id == "c1"
    assert json.loads(first_result.content) == {"id": 7, "summary": "VPN drops", "notes": None}
    assert result.messages[3].content == "note added to 7"
    # The model saw the tools, and the tool results came back to it in order.
    assert [t.name for t in model.requests[0].params.tools] == ["find_ticket", "add_note"]
    assert model.requests[2].messages[-1].content == "note added to 7"


async def test_bad_arguments_go_back_to_the_model() -> None:
    model = ScriptedModel(
        [
            Reply.calls(tool_call("find_ticket", '{"ticket_id": "seven"', id="c1")),
            Reply.calls(tool_call("find_ticket", {"ticket_id": "seven"}, id="c2")),
            Reply.calls(tool_call("no_such_tool", {}, id="c3")),
            Reply.calls(tool_call("find_ticket", {"ticket_id": 8}, id="c4")),
            "Ticket 7 it is.",
        ]
    )
    desk = Desk({7: "VPN drops"}, [])

    result = await LLM.for_model(model).run_tools(
        "agent", "ticket?", [find_ticket], account_id=ACCOUNT, deps=desk, max_steps=4
    )

    assert result.value == "Ticket 7 it is."
    invalid_json, wrong_type, unknown, retry = (m for m in result.messages if m.role == "tool")
    assert invalid_json.is_error
    assert "Invalid arguments for tool 'find_ticket'" in invalid_json.content
    assert "Invalid JSON" in invalid_json.content
    assert wrong_type.is_error
    assert "ticket_id" in wrong_type.content
    assert unknown.is_error
    assert "Unknown tool 'no_such_tool'" in unknown.content
    assert "find_ticket" in unknown.content
    assert retry.is_error
    assert retry.content == "no ticket 8; ask the engineer for the right number"
    assert desk.looked_up == [8]


async def test_step_limit_raises_a_typed_error() -> None:
    model = ScriptedModel([Reply.calls(tool_call("find_ticket", {"ticket_id": 7})) for _ in range(3)])

    with pytest.raises(ToolStepLimitExceeded) as caught:
        await LLM.for_model(model).run_tools(
            "agent", "loop", [find_ticket], account_id=ACCOUNT, deps=Desk({7: "x"}, []), max_steps=2
        )

    assert caught.value.max_steps == 2
    assert caught.value.pending_tools == ("find_ticket",)
    assert len(model.requests) == 3


async def test_step_limit_defaults_to_settings() -> None:
    model = ScriptedModel([Reply.calls(tool_call("find_ticket", {"ticket_id": 7})) for _ in range(2)])
    llm = LLM.for_model(model)
    llm.settings.max_tool_steps = 1

    with pytest.raises(ToolStepLimitExceeded):
        await llm.run_tools("agent", "loop", [find_ticket], account_id=None, deps=Desk({7: "x"}, []))


async def test_tool_exceptions() -> None:
    llm = LLM.for_model(ScriptedModel([Reply.calls(tool_call("explode", {"reason": "disk full"}))]))
    with pytest.raises(ToolFailed, match="disk full") as caught:
        await llm.run_tools("agent", "go", [explode], account_id=None)
    assert isinstance(caught.value.__cause__, RuntimeError)

    llm = LLM.for_model(ScriptedModel([Reply.calls(tool_call("missing", {"ticket_id": 1}))]))
    with pytest.raises(NotFound):
        await llm.run_tools("agent", "go", [missing], account_id=None)


async def test_tool_loop_over_openai_wire_format(llm: LLM, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(
        tool_reply(FakeToolCall("find_ticket", {"ticket_id": 7}, id="call_1")),
        text_reply("It is about the VPN."),
    )

    result = await llm.run_tools("quick", "ticket 7?", [find_ticket], account_id=None, deps=Desk({7: "VPN"}, []))

    assert result.value == "It is about the VPN."
    first, second = (r.body for r in openai_server.requests)
    (offered,) = first["tools"]
    assert offered["type"] == "function"
    assert offered["function"]["name"] == "find_ticket"
    assert offered["function"]["parameters"]["required"] == ["ticket_id"]
    assert second["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "find_ticket", "arguments": '{"ticket_id": 7}'}}
        ],
    }
    assert second["messages"][2]["role"] == "tool"
    assert second["messages"][2]["tool_call_id"] == "call_1"


async def test_tool_loop_over_anthropic_wire_format(llm: LLM, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.enqueue(
        tool_reply(
            FakeToolCall("find_ticket", {"ticket_id": 7}, id="toolu_1"),
            FakeToolCall("find_ticket", {"ticket_id": 9}, id="toolu_2"),
            text="Checking both.",
        ),
        text_reply("Both are about the VPN."),
    )

    result = await llm.run_tools("chat", "tickets 7 and 9?", [find_ticket], account_id=None, deps=Desk({7: "VPN"}, []))

    assert result.value == "Both are about the VPN."
    second = anthropic_server.requests[1].body
    assert second["tools"][0]["input_schema"]["required"] == ["ticket_id"]
    assert "tool_choice" not in second
    assistant, results = second["messages"][1:]
    assert assistant["content"] == [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_1", "name": "find_ticket", "input": {"ticket_id": 7}},
        {"type": "tool_use", "id": "toolu_2", "name": "find_ticket", "input": {"ticket_id": 9}},
    ]
    # Both results travel in one user message, the second flagged as an error (ToolRetry).
    assert results["role"] == "user"
    assert [block["tool_use_id"] for block in results["content"]] == ["toolu_1", "toolu_2"]
    assert results["content"][1]["is_error"] is True
    assert "is_error" not in results["content"][0]


async def test_duplicate_tool_names_are_refused() -> None:
    llm = LLM.for_model(ScriptedModel())
    with pytest.raises(ValueError, match="share a name"):
        await llm.run_tools("agent", "x", [find_ticket, find_ticket], account_id=None)


def test_message_helpers_round_trip() -> None:
    call = tool_call("find_ticket", {"ticket_id": 1}, id="c9")
    assert Message.tool_result(call, "ok").to_dict() == {
        "role": "tool",
        "content": "ok",
        "tool_call_id": "c9",
        "tool_name": "find_ticket",
        "is_error": False,
    }
