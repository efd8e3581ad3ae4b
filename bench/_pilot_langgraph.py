"""The reference turn: a two-node LangGraph graph (build prompt, call and validate) on AsyncSqliteSaver."""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from bench._pilot_common import scripted_reply
from deskpilot.llm import LLM, Message, Purpose
from deskpilot.llm.testing import FunctionModel
from deskpilot.pilot import prompts
from deskpilot.pilot.engine import question_options
from deskpilot.pilot.schemas import StepReply, StepResponse, step_content


class TurnState(TypedDict, total=False):
    """What LangGraph checkpoints: the conversation, the step waiting for an answer and the token usage."""

    system_prompt: str
    messages: Annotated[list[dict[str, str]], operator.add]
    response: dict[str, Any] | None
    step: dict[str, Any]
    input_tokens: Annotated[int, operator.add]
    output_tokens: Annotated[int, operator.add]


def build_graph(saver: AsyncSqliteSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """build_prompt (the engineer's answer becomes the next user message) → call_model (call, validate, store)."""
    # The same zero-latency function and the same validation as deskpilot's turn, through the same facade
    # (its NullRecorder: LangGraph keeps the usage in its own state).
    llm = LLM.for_model(FunctionModel(scripted_reply))

    def build_prompt(state: TurnState) -> dict[str, Any]:
        raw = state.get("response")
        if raw is None:
            return {}
        response = StepResponse.model_validate(raw)
        text = prompts.format_response(
            selected_option=response.selected_option, free_text=response.free_text_input,
            was_skipped=response.was_skipped,
            action_success=None if response.action_result is None else response.action_result.success,
            action_details=None if response.action_result is None else response.action_result.details,
            options=question_options(state["step"]),
        )
        return {"messages": [{"role": "user", "content": text}], "response": None}

    async def call_model(state: TurnState) -> dict[str, Any]:
        history = [
            Message.assistant(m["content"]) if m["role"] == "assistant" else Message.user(m["content"])
            for m in state["messages"]
        ]
        result = await llm.structured(
            Purpose.PILOT_STEP, [Message.system(state["system_prompt"]), *history], StepReply, account_id=None,
            max_tokens=2048,
        )
        reply = result.value
        return {
            "messages": [{"role": "assistant", "content": reply.model_dump_json(exclude_none=True)}],
            "step": step_content(reply.step),
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
        }

    builder = StateGraph(TurnState)
    builder.add_node("build_prompt", build_prompt)
    builder.add_node("call_model", call_model)
    builder.add_edge(START, "build_prompt")
    builder.add_edge("build_prompt", "call_model")
    builder.add_edge("call_model", END)
    return builder.compile(checkpointer=saver)


@asynccontextmanager
async def langgraph_turns(path: Path, *, synchronous: str | None) -> AsyncIterator[LangGraphTurns]:
    """A compiled graph on its own SQLite file; `synchronous=None` leaves SQLite's default (FULL)."""
    async with aiosqlite.connect(path) as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        if synchronous is not None:
            await conn.execute(f"PRAGMA synchronous={synchronous}")
        yield LangGraphTurns(build_graph(saver))


class LangGraphTurns:
    """Start a thread and answer its steps, as the deskpilot side does with start_session and respond."""

    def __init__(self, graph: CompiledStateGraph[Any, Any, Any, Any]) -> None:
        self.graph = graph

    async def start(self, thread_id: str, system_prompt: str, first_message: str) -> None:
        await self.graph.ainvoke(
            {"system_prompt": system_prompt, "messages": [{"role": "user", "content": first_message}]},
            {"configurable": {"thread_id": thread_id}},
        )

    async def respond(self, thread_id: str, response: StepResponse) -> None:
        await self.graph.ainvoke(
            {"response": response.model_dump(mode="json")}, {"configurable": {"thread_id": thread_id}}
        )
