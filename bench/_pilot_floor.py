"""The capacity measure's floor: a bare ASGI forwarder moving a turn's bytes, with nothing of deskpilot in between."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench._asgi import answer, read_body
from deskpilot.llm.eager_writes import install_eager_body_writes

# A JSON file: the fake model's URL and key, and the paths of what is forwarded, recorded from deskpilot in the
# same run (bench._pilot_capacity): the model request of a late turn and the answer to a turn.
CONFIG_ENV = "BENCH_FLOOR_CONFIG"


class Forwarder:
    """POST …/responses: read the answer, send the recorded model request, answer with the recorded turn reply.

    The least any server must do for a turn over this stack (uvicorn + httptools, aiohttp to the model, orjson):
    parse the engineer's answer, encode a model request of the same size, parse the model's answer, encode an
    answer of the same size with a new step id. No framework, no authentication, no database, no validation,
    no prompt building: what deskpilot spends on top of this is its own cost per turn.
    """

    def __init__(self, model_url: str, api_key: str, model_request: bytes, turn_reply: bytes) -> None:
        self.url = f"{model_url}/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.model_request: Any = orjson.loads(model_request)
        self.turn_reply: Any = orjson.loads(turn_reply)
        self.client: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            await answer(send, 200, b"{}")
            return
        engineer = orjson.loads(await read_body(receive))
        assert self.client is not None
        async with self.client.post(self.url, data=orjson.dumps(self.model_request), headers=self.headers) as reply:
            completion = orjson.loads(await reply.read())
        step = orjson.loads(completion["choices"][0]["message"]["content"])
        next_step = {**self.turn_reply["next_step"], "step_id": str(uuid.uuid4()), "reasoning": step.get("reasoning")}
        turn = {**self.turn_reply, "next_step": next_step, "answered": engineer.get("step_id")}
        await answer(send, 200, orjson.dumps(turn))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                install_eager_body_writes(asyncio.get_running_loop())  # as deskpilot's app does on Python 3.11
                self.client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app() -> Forwarder:
    """uvicorn's `--factory` entry, configured by the file the environment names (not a deskpilot setting)."""
    config = orjson.loads(Path(os.environ[CONFIG_ENV]).read_bytes())  # noqa: TID251 - the bench's own
    return Forwarder(config["model_url"], config["api_key"], Path(config["request"]).read_bytes(),
                     Path(config["reply"]).read_bytes())
