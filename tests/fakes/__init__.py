"""Loopback fakes of external services, speaking their real wire formats to the real SDK clients."""

from tests.fakes._server import (
    FakeReply,
    FakeToolCall,
    RecordedRequest,
    ScriptedServer,
    error_reply,
    json_reply,
    slow_reply,
    text_reply,
    tool_reply,
)
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer

__all__ = [
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "FakeReply",
    "FakeToolCall",
    "RecordedRequest",
    "ScriptedServer",
    "error_reply",
    "json_reply",
    "slow_reply",
    "text_reply",
    "tool_reply",
]
