"""The chat benchmark's loopback OpenAI-compatible model, in its own process: a fixed reply in ~20 chunks, no delay.

A request offering tools is the chat turn: it gets `chat_reply(n)` (prose, a [QUESTIONS] and a [PROMOTE] block),
streamed in `CHUNKS` pieces. Anything else is the title request of a chat's first turn: a short title.
`GET /bench/last-turn-request` gives the body of the last chat turn deskpilot sent, for the direct side to replay.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tests.fakes import FakeOpenAIServer, FakeReply

from bench._pilot_fake import API_KEY

CHUNKS = 20
PROSE = (
    "The drops only hit users on the guest VLAN, which points at the DHCP scope rather than the VPN gateway. "
    "When the scope runs out of leases, a client that roams between access points gets no address and the "
    "tunnel falls over a minute later. Check how full the scope is and how long its leases last before "
    "touching the firewall."
)
QUESTIONS = [{"text": "Does it happen at a fixed interval, or only after roaming?", "context": "Lease versus rekey"}]


def chat_reply(n: int) -> str:
    """The n-th chat reply: the same prose and question; the promoted fact is numbered, so each turn adds one."""
    promote = {"source_type": "ai_synthesis", "text": f"Only guest VLAN users are affected ({n})", "summary": "scope"}
    return (
        f"{PROSE}\n\n[QUESTIONS]\n{json.dumps(QUESTIONS)}\n[/QUESTIONS]\n[PROMOTE]\n{json.dumps(promote)}\n[/PROMOTE]"
    )


TITLE = "VPN drops on the guest VLAN"
# Token counts as a provider reports them, so that nobody estimates them.
CHAT_TOKENS = (2_400, 180)
TITLE_TOKENS = (120, 8)


def pieces(text: str, count: int = CHUNKS) -> list[str]:
    """`text` cut into `count` pieces of about equal length (the first one starts the visible prose)."""
    size = len(text)
    return [text[i * size // count : (i + 1) * size // count] for i in range(count)]


@dataclass
class ChunkedReply(FakeReply):
    """A FakeReply streamed in `CHUNKS` equal pieces instead of word by word."""

    def chunks(self, text: str) -> list[str]:
        return pieces(text)


def chat_request(model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat-completions request shaped like deskpilot's chat turn: system prompt, history, tools, streaming."""
    tool = {
        "type": "function",
        "function": {
            "name": "lookup_ticket",
            "description": "Look a PSA ticket up by number.",
            "parameters": {"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]},
        },
    }
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are deskpilot's troubleshooting copilot. " * 40},
            {"role": "user", "content": "Client laptops drop the VPN several times a day since the update."},
        ],
        "tools": [tool],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


class ChatFakeServer(FakeOpenAIServer):
    """The test suite's FakeOpenAIServer wire format; requests are not kept in memory (no `record`)."""

    def __init__(self) -> None:
        super().__init__(api_key=API_KEY)
        self.replies = itertools.count(1)
        self.title = FakeReply(text=TITLE, input_tokens=TITLE_TOKENS[0], output_tokens=TITLE_TOKENS[1])
        # The last chat-turn request deskpilot sent, replayed as is by the benchmark's direct side.
        self.last_turn_request = json.dumps(chat_request()).encode()

    def build_app(self) -> Starlette:
        app = super().build_app()
        app.router.routes.append(Route("/bench/last-turn-request", self._last_turn_request, methods=["GET"]))
        return app

    async def _last_turn_request(self, _request: Request) -> Response:
        return Response(self.last_turn_request, media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        body: Any = json.loads(raw)
        if body.get("tools") and not request.headers.get("x-bench-direct"):
            self.last_turn_request = raw
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        if body.get("tools"):
            reply: FakeReply = ChunkedReply(
                text=chat_reply(next(self.replies)), input_tokens=CHAT_TOKENS[0], output_tokens=CHAT_TOKENS[1]
            )
        else:
            reply = self.title
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._sse(body, reply, include_usage), media_type="text/event-stream")
        return JSONResponse(self._completion(body, reply))


def main() -> None:
    """`python -m bench._chat_fake --port N`: prints the port once listening, serves until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args()
    server = ChatFakeServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    config = uvicorn.Config(
        server.app, log_config=None, log_level="warning", lifespan="off", ws="none", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
