"""aiohttp request bodies leave within the caller's step (Python 3.11 through the task factory, 3.12+ by aiohttp)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import aiohttp
import pytest

from deskpilot.llm.eager_writes import WRITE_BYTES, eager_body_writes, install_eager_body_writes

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def _content_length(head: bytes) -> int:
    return next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = _content_length(head)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class RawServer:
    """An HTTP/1.1 peer on a plain socket: answers the first request, then the second once told to."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self.second = threading.Event()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.conn = conn
        self.accepted.set()
        _read_request(conn)
        conn.sendall(OK)
        self.second.wait(10)
        _read_request(conn)
        conn.sendall(OK)

    def peek(self) -> bytes:
        """What the client has sent and nobody read yet, without waiting."""
        assert self.conn is not None
        try:
            return self.conn.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    server.thread.start()
    yield server
    server.second.set()
    server.thread.join(5)
    if server.conn is not None:
        server.conn.close()
    server.listener.close()


@pytest.fixture
async def eager_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()
    loop.set_task_factory(eager_body_writes(before))
    yield loop
    loop.set_task_factory(before)


async def test_a_request_body_is_on_the_wire_before_the_next_ready_task_runs(
    eager_loop: asyncio.AbstractEventLoop, raw_server: RawServer
) -> None:
    body = b'{"model": "m", "messages": []}'
    async with aiohttp.ClientSession(f"http://127.0.0.1:{raw_server.port}") as http:
        async with http.post("/v1/chat/completions", data=b"{}") as warm:  # a kept-alive connection to reuse
            assert await warm.read() == b"ok"

        async def post() -> bytes:
            async with http.post("/v1/chat/completions", data=body) as reply:
                return await reply.read()

        def seen() -> bytes:
            try:
                return raw_server.peek()
            finally:
                raw_server.second.set()

        async def next_ready_task() -> bytes:
            return seen()

        # Both become ready in the same turn of the loop; the poster runs first and waits for its answer.
        posting = asyncio.ensure_future(post())
        observed = await asyncio.ensure_future(next_ready_task())
        assert await posting == b"ok"
    assert observed.endswith(b"\r\n\r\n" + body)


def _named(fn: Any) -> Any:
    fn.__qualname__ = WRITE_BYTES
    return fn


async def test_the_factory_runs_the_write_up_to_its_first_wait_then_a_task_finishes_it(
    eager_loop: asyncio.AbstractEventLoop,
) -> None:
    steps: list[str] = []
    gate: asyncio.Future[str] = eager_loop.create_future()

    @_named
    async def write_bytes() -> str:
        steps.append("headers and body written")
        value = await gate
        steps.append(f"after the wait: {value}")
        return "done"

    task = asyncio.ensure_future(write_bytes())
    assert steps == ["headers and body written"]  # within ensure_future, before any other task ran
    gate.set_result("drained")
    assert await task == "done"
    assert steps[-1] == "after the wait: drained"


async def test_a_write_that_finishes_at_once_is_a_done_future_and_a_failure_is_kept_on_it(
    eager_loop: asyncio.AbstractEventLoop,
) -> None:
    @_named
    async def write_bytes(fail: bool) -> str:
        if fail:
            raise ConnectionResetError("peer went away")
        return "written"

    finished = asyncio.ensure_future(write_bytes(False))
    assert finished.done()
    assert finished.result() == "written"
    failed = asyncio.ensure_future(write_bytes(True))
    assert failed.done()
    with pytest.raises(ConnectionResetError):
        failed.result()


async def test_cancelling_the_rest_of_a_write_reaches_the_coroutine(eager_loop: asyncio.AbstractEventLoop) -> None:
    cleaned: list[str] = []
    never: asyncio.Future[None] = eager_loop.create_future()

    @_named
    async def write_bytes() -> None:
        try:
            await never
        except asyncio.CancelledError:
            cleaned.append("connection closed")
            raise

    task = asyncio.ensure_future(write_bytes())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["connection closed"]


async def test_other_coroutines_start_as_plain_tasks_through_a_factory_already_set() -> None:
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def previous(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    started: list[str] = []

    async def ordinary() -> None:
        started.append("ran")

    loop.set_task_factory(eager_body_writes(previous))
    try:
        task = asyncio.ensure_future(ordinary())
        assert started == []  # not started eagerly
        await task
    finally:
        loop.set_task_factory(None)
    assert started == ["ran"]
    assert made == [ordinary.__qualname__]


async def test_a_large_body_that_waits_for_the_socket_still_arrives_whole(
    eager_loop: asyncio.AbstractEventLoop,
) -> None:
    received: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = _content_length(head)
        received.append(len(await reader.readexactly(length)))
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = b"x" * (8 << 20)  # more than a socket buffer: the write waits for the reader
    async with server, aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{port}/", data=body) as reply:
        assert await reply.read() == b"ok"
    assert received == [len(body)]


async def test_installing_is_for_python_3_11_only_and_once() -> None:
    loop = asyncio.get_running_loop()
    try:
        if sys.version_info >= (3, 12):
            assert install_eager_body_writes(loop) is False  # aiohttp starts its writes eagerly itself
            assert loop.get_task_factory() is None
        else:
            assert install_eager_body_writes(loop) is True
            assert install_eager_body_writes(loop) is False
    finally:
        loop.set_task_factory(None)
