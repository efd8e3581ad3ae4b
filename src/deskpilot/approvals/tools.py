"""Which tools need a human's approval, and their argument models (pure: no I/O).

A tool that changes something outside deskpilot is marked once, where it is built:

    @requires_approval
    @tool
    async def restart_service(ctx: ToolContext[Desk], host: str, service: str) -> str: ...

The chat turn (and later automations and agents) asks `needs_approval(call.name)` before running a call; the
approvals service finds the argument model here to validate an engineer's edited arguments.
"""

from __future__ import annotations

from pydantic import BaseModel

from deskpilot.llm.tools import Tool


class ApprovalTools:
    """Tool name → argument model of every tool that needs approval."""

    def __init__(self) -> None:
        self._models: dict[str, type[BaseModel]] = {}

    def register(self, tool: Tool) -> Tool:
        """Mark `tool` as needing approval; registering the same tool again is harmless."""
        known = self._models.get(tool.name)
        if known is not None and known is not tool.args_model:
            raise ValueError(f"another tool named {tool.name!r} already needs approval")
        self._models[tool.name] = tool.args_model
        return tool

    def needs_approval(self, tool_name: str) -> bool:
        return tool_name in self._models

    def args_model(self, tool_name: str) -> type[BaseModel] | None:
        return self._models.get(tool_name)

    def names(self) -> list[str]:
        return sorted(self._models)


registry = ApprovalTools()


def requires_approval(tool: Tool) -> Tool:
    """Decorator (over `@tool`) or call: `tool` asks a human before each run."""
    return registry.register(tool)


def needs_approval(tool_name: str) -> bool:
    return registry.needs_approval(tool_name)
