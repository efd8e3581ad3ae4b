"""A loopback server speaking Anthropic's Messages API wire format, for the real anthropic SDK to talk to."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes._server import FakeReply, ScriptedServer, estimate_tokens, wait_or_disconnect

_ids = itertools.count(1)


def _error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


class FakeAnthropicServer(ScriptedServer):
    """POST /v1/messages (plain and SSE streaming); checks `x-api-key` and `anthropic-version`.

    A structured reply answers with a tool_use block of the tool named by a forced `tool_choice`.
    """

    @property
    def base_url(self) -> str:
        return self.url

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> Response:
        body = await self.record(request)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return _error(401, "invalid x-api-key", "authentication_error")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version header is required", "invalid_request_error")
        if not isinstance(body, dict) or not {"model", "messages", "max_tokens"} <= body.keys():
            return _error(400, "model, messages and max_tokens are required", "invalid_request_error")
        reply = self.next_reply()
        if reply is None:
            return _error(500, "the fake server has no scripted reply left", "api_error")
        if reply.delay_s and not await wait_or_disconnect(request, reply.delay_s):
            return Response(status_code=499)
        if reply.status != 200:
            return _error(reply.status, reply.error_message, reply.error_type, reply.headers)
        blocks = self._blocks(body, reply)
        if body.get("stream"):
            return StreamingResponse(self._sse(body, reply, blocks), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": f"msg_{next(_ids)}",
                "type": "message",
                "role": "assistant",
                "model": reply.model or body["model"],
                "content": blocks,
                "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn",
                "stop_sequence": None,
                "usage": self._usage(body, reply, blocks),
            }
        )

    @staticmethod
    def _blocks(body: dict[str, Any], reply: FakeReply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        if reply.has_structured:
            choice = body.get("tool_choice") or {}
            if choice.get("type") == "tool":
                blocks.append(
                    {"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": choice["name"], "input": reply.structured}
                )
            else:
                blocks.append({"type": "text", "text": json.dumps(reply.structured)})
        for call in reply.tool_calls:
            arguments = call.arguments if isinstance(call.arguments, dict) else json.loads(call.arguments)
            blocks.append(
                {"type": "tool_use", "id": call.id or f"toolu_{next(_ids)}", "name": call.name, "input": arguments}
            )
        return blocks

    @staticmethod
    def _usage(body: dict[str, Any], reply: FakeReply, blocks: list[dict[str, Any]]) -> dict[str, int]:
        prompt = reply.input_tokens if reply.input_tokens is not None else estimate_tokens(body["messages"])
        output = reply.output_tokens if reply.output_tokens is not None else estimate_tokens(blocks)
        return {"input_tokens": prompt, "output_tokens": output}

    async def _sse(self, body: dict[str, Any], reply: FakeReply, blocks: list[dict[str, Any]]) -> AsyncIterator[str]:
        usage = self._usage(body, reply, blocks)
        message: dict[str, Any] = {
            "id": f"msg_{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
        }
        yield _event("message_start", {"type": "message_start", "message": message})
        yield _event("ping", {"type": "ping"})
        sent = 0
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                yield _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                for piece in reply.chunks(block["text"]):
                    if reply.stream_error_after is not None and sent == reply.stream_error_after:
                        error = {"type": "overloaded_error", "message": reply.error_message}
                        yield _event("error", {"type": "error", "error": error})
                        return
                    sent += 1
                    delta = {"type": "text_delta", "text": piece}
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            else:
                start = {**block, "input": {}}
                yield _event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
                )
                arguments = json.dumps(block["input"])
                for offset in range(0, len(arguments), 7):
                    delta = {"type": "input_json_delta", "partial_json": arguments[offset : offset + 7]}
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        yield _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield _event("message_stop", {"type": "message_stop"})
