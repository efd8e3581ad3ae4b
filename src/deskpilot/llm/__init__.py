"""LLM provider layer: one interface for structured output, text, streaming and tool calls over any provider."""

from deskpilot.llm.anthropic_model import AnthropicModel, make_anthropic_client
from deskpilot.llm.base import Model
from deskpilot.llm.budget import Budget
from deskpilot.llm.check import CheckReport, ModelCheck, check_provider
from deskpilot.llm.errors import (
    AllModelsFailed,
    BudgetExceeded,
    LLMNotConfigured,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    StructuredOutputError,
    ToolFailed,
    ToolStepLimitExceeded,
)
from deskpilot.llm.facade import LLM, Result, TextStream, Usage
from deskpilot.llm.fallback import FallbackModel
from deskpilot.llm.messages import (
    Completion,
    ImagePart,
    Message,
    OutputSchema,
    Prompt,
    RequestParams,
    StreamEvent,
    ToolCall,
    ToolDefinition,
)
from deskpilot.llm.openai_model import OpenAIModel, make_openai_client
from deskpilot.llm.recording import (
    CallContext,
    CallRecord,
    DeferredRecords,
    MemoryRecorder,
    NullRecorder,
    Recorder,
    SqlRecorder,
    reconstruct_messages,
    record_row,
)
from deskpilot.llm.routing import Purpose
from deskpilot.llm.tools import Tool, ToolContext, ToolRetry, tool

__all__ = [
    "LLM",
    "AllModelsFailed",
    "AnthropicModel",
    "Budget",
    "BudgetExceeded",
    "CallContext",
    "CallRecord",
    "CheckReport",
    "Completion",
    "DeferredRecords",
    "FallbackModel",
    "ImagePart",
    "LLMNotConfigured",
    "MemoryRecorder",
    "Message",
    "Model",
    "ModelCheck",
    "NullRecorder",
    "OpenAIModel",
    "OutputSchema",
    "Prompt",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "Purpose",
    "Recorder",
    "RequestParams",
    "Result",
    "SqlRecorder",
    "StreamEvent",
    "StructuredOutputError",
    "TextStream",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolDefinition",
    "ToolFailed",
    "ToolRetry",
    "ToolStepLimitExceeded",
    "Usage",
    "check_provider",
    "make_anthropic_client",
    "make_openai_client",
    "reconstruct_messages",
    "record_row",
    "tool",
]
