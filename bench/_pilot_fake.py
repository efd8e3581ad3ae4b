"""The loopback OpenAI-compatible model of the capacity run, in its own process: every answer after a fixed delay."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tests.fakes import FakeOpenAIServer, text_reply

from bench._pilot_common import CLASSIFICATION_JSON, CLASSIFICATION_NAME, CLASSIFY_TOKENS, STEP_JSON, STEP_TOKENS

API_KEY = "sk-bench-pilot"


class DelayedServer(FakeOpenAIServer):
    """The test suite's FakeOpenAIServer wire format, answering by schema: the classification or the fixed step.

    The delay is a plain sleep (the test server polls for a client disconnect every 20 ms, which with hundreds
    of requests in flight spends this process's CPU on polling), and requests are not kept in memory.
    """

    def __init__(self, delay_s: float) -> None:
        super().__init__(api_key=API_KEY)
        self.delay_s = delay_s
        self.step = text_reply(STEP_JSON, input_tokens=STEP_TOKENS[0], output_tokens=STEP_TOKENS[1])
        self.classification = text_reply(
            CLASSIFICATION_JSON, input_tokens=CLASSIFY_TOKENS[0], output_tokens=CLASSIFY_TOKENS[1]
        )

    async def _chat(self, request: Request) -> Response:
        body: Any = json.loads(await request.body())
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        reply = self.classification if schema == CLASSIFICATION_NAME else self.step
        await asyncio.sleep(self.delay_s)
        return JSONResponse(self._completion(body, reply))


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
        server.app, log_config=None, log_level="warning", lifespan="off", ws="none", access_log=False,
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
