"""The loopback OpenAI-compatible model of the capacity run, in its own process: every answer after a fixed delay."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

import orjson
import uvicorn
from tests.fakes import FakeOpenAIServer, text_reply

from bench._asgi import answer, read_body
from bench._pilot_common import CLASSIFICATION_JSON, CLASSIFICATION_NAME, CLASSIFY_TOKENS, STEP_JSON, STEP_TOKENS

API_KEY = "sk-bench-pilot"
LAST_STEP_REQUEST = "/bench/last-step-request"


class DelayedServer(FakeOpenAIServer):
    """The test suite's FakeOpenAIServer wire format, answering by schema: the classification or the fixed step.

    Its CPU shares the machine's 2 cores with the server under test, so it is kept small: a plain ASGI callable
    for the one route (no routing, no Request object), orjson both ways, the delay a plain sleep (the test
    server polls for a client disconnect every 20 ms, which with hundreds of requests in flight spends this
    process's CPU on polling), and requests are not kept in memory.
    """

    def __init__(self, delay_s: float) -> None:
        super().__init__(api_key=API_KEY)
        self.delay_s = delay_s
        self.step = text_reply(STEP_JSON, input_tokens=STEP_TOKENS[0], output_tokens=STEP_TOKENS[1])
        self.classification = text_reply(
            CLASSIFICATION_JSON, input_tokens=CLASSIFY_TOKENS[0], output_tokens=CLASSIFY_TOKENS[1]
        )
        self._authorization = f"Bearer {API_KEY}".encode()
        # The body of the latest step request, for the floor of the capacity measure (bench._pilot_floor).
        self.last_step_request = b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == LAST_STEP_REQUEST and scope["method"] == "GET":
            await answer(send, 200, self.last_step_request)
            return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await answer(send, 404, _error("not found"))
            return
        raw = await read_body(receive)
        if (b"authorization", self._authorization) not in scope["headers"]:
            await answer(send, 401, _error("Incorrect API key provided."))
            return
        body: Any = orjson.loads(raw)
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if schema == CLASSIFICATION_NAME:
            reply = self.classification
        else:
            reply = self.step
            self.last_step_request = raw
        await asyncio.sleep(self.delay_s)
        await answer(send, 200, orjson.dumps(self._completion(body, reply)))


def _error(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})


def main() -> None:
    """`python -m bench._pilot_fake --delay 1.0`: prints the port once listening, serves until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before each answer")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args()
    server = DelayedServer(args.delay)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    # Listening before the port is announced: early connections wait in the backlog until uvicorn serves.
    sock.listen(4096)
    print(sock.getsockname()[1], flush=True)
    # Nobody reads the pipe after the port: point stdout elsewhere so that it can never fill up.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    config = uvicorn.Config(
        server, log_config=None, log_level="warning", lifespan="off", ws="none", access_log=False,
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
