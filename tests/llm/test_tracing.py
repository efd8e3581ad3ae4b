"""Each exchange is an OpenTelemetry span with gen_ai.* attributes; tools get execute_tool spans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deskpilot.llm import LLM, facade
from deskpilot.llm.testing import Reply, ScriptedModel, tool_call
from deskpilot.llm.tools import tool


@tool
async def ping() -> str:
    """Answers pong."""
    return "pong"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(facade, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


async def test_calls_and_tools_are_traced(spans: InMemorySpanExporter) -> None:
    model = ScriptedModel([Reply.calls(tool_call("ping", {}), input_tokens=11, output_tokens=3), "done"])
    await LLM.for_model(model).run_tools("agent", "go", [ping], account_id=None)
    async with LLM.for_model(ScriptedModel(["streamed text"])).stream("chat", "go", account_id=None) as stream:
        _ = [d async for d in stream]

    first, tool_span, second, streamed = spans.get_finished_spans()
    assert first.name == "chat test:scripted"
    attributes = dict(first.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "test"
    assert attributes["gen_ai.request.model"] == "test:scripted"
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["deskpilot.llm.purpose"] == "agent"
    assert tool_span.name == "execute_tool ping"
    assert dict(tool_span.attributes or {})["gen_ai.tool.name"] == "ping"
    assert second.name == "chat test:scripted"
    assert dict(streamed.attributes or {})["gen_ai.request.stream"] is True
