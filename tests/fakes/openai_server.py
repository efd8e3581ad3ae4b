"""A loopback server speaking OpenAI's chat-completions wire format, for the real openai SDK to talk to."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes._server import FakeReply, ScriptedServer, estimate_tokens, wait_or_disconnect

_ids = itertools.count(1)


def _error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class FakeOpenAIServer(ScriptedServer):
    """POST /v1/chat/completions (plain and SSE streaming) and GET /v1/models.

    Checks `Authorization: Bearer <api_key>` when an api_key is given. `base_url` is what the SDK needs.
    """

    models = ("gpt-4o-mini", "gpt-4o")

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", "invalid_request_error")

    async def _models(self, request: Request) -> Response:
        await self.record(request)
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Request) -> Response:
        body = await self.record(request)
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return _error(400, "model and messages are required", "invalid_request_error")
        reply = self.next_reply()
        if reply is None:
            return _error(500, "the fake server has no scripted reply left", "server_error")
        if reply.delay_s and not await wait_or_disconnect(request, reply.delay_s):
            return Response(status_code=499)
        if reply.status != 200:
            return _error(reply.status, reply.error_message, reply.error_type, reply.headers)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._sse(body, reply, include_usage), media_type="text/event-stream")
        return JSONResponse(self._completion(body, reply))

    @staticmethod
    def _content(reply: FakeReply) -> str | None:
        if reply.has_structured:
            return json.dumps(reply.structured)
        return reply.text

    @staticmethod
    def _usage(body: dict[str, Any], reply: FakeReply, content: str | None) -> dict[str, int]:
        prompt = reply.input_tokens if reply.input_tokens is not None else estimate_tokens(body["messages"])
        output_text = (content or "") + "".join(c.arguments_json() for c in reply.tool_calls)
        completion = reply.output_tokens if reply.output_tokens is not None else estimate_tokens(output_text)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
        content = self._content(reply)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_{next(_ids)}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for call in reply.tool_calls
            ]
        return {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                    "logprobs": None,
                }
            ],
            "usage": self._usage(body, reply, content),
        }

    async def _sse(self, body: dict[str, Any], reply: FakeReply, include_usage: bool) -> AsyncIterator[str]:
        base = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reply.model or body["model"],
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        content = self._content(reply)
        yield chunk({"role": "assistant", "content": ""})
        for count, piece in enumerate(reply.chunks(content or "")):
            if reply.stream_error_after is not None and count == reply.stream_error_after:
                yield f"data: {json.dumps({'error': {'message': reply.error_message, 'type': 'server_error'}})}\n\n"
                return
            yield chunk({"content": piece})
        for index, call in enumerate(reply.tool_calls):
            arguments = call.arguments_json()
            head = {"index": index, "id": call.id or f"call_{next(_ids)}", "type": "function"}
            yield chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
            # Arguments arrive in fragments, as real servers send them.
            for start in range(0, len(arguments), 7):
                fragment = arguments[start : start + 7]
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
        if include_usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(body, reply, content)})}\n\n"
        yield "data: [DONE]\n\n"
