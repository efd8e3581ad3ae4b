"""The HTTP client of calls to OpenAI-compatible models: an aiohttp session per provider, made in the running loop."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Final
from urllib.parse import urlsplit

import aiohttp

# Calls in flight at once per provider (a stream holds its connection for its whole reply).
STREAM_CONNECTIONS: Final = 1024
KEEPALIVE_S: Final = 4.0
# aiohttp reads a line of up to twice this: a provider may send a large tool call or a whole answer in one event.
READ_BUFFER_BYTES: Final = 1024 * 1024


def _tls_context() -> ssl.SSLContext:
    # The CA bundle httpx uses (certifi), so both clients trust the same authorities.
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


async def _chunk_sent(_session: aiohttp.ClientSession, context: SimpleNamespace, _params: object) -> None:
    on_sent = getattr(context.trace_request_ctx, "on_sent", None)
    if on_sent is not None:
        on_sent()


class ProviderSession:
    """One aiohttp `ClientSession` for a provider's calls, created on first use in the running event loop.

    Model calls are the hot path of every turn: aiohttp writes a request and reads its first stream event in
    about half the time httpx takes (bench/bench_chat.py, against the loopback fake), a whole JSON answer for a
    fifth of the SDK's CPU (0.2 ms against 1.0 ms a call), and its C parser reads the reply. Timeouts are per
    connect and per read, like the SDK's, so a stalled stream times out. A session used from another event loop
    than the one that made it (a CLI run after a test, say) is replaced.
    """

    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies: dict[str, str | None] = {}

    def _proxy(self, url: str) -> str | None:
        """The proxy for `url` from HTTP(S)_PROXY/NO_PROXY, as httpx honours them; looked up once per URL (aiohttp's
        `trust_env` reads the environment again on every request)."""
        if url not in self._proxies:
            parts = urlsplit(url)
            proxies = urllib.request.getproxies()
            proxy = proxies.get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = None
            self._proxies[url] = proxy
        return self._proxies[url]

    def _current(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            trace = aiohttp.TraceConfig()
            trace.on_request_chunk_sent.append(_chunk_sent)
            self._session = aiohttp.ClientSession(
                # Idle connections go before a server's usual keep-alive of 5 s would close them under a request.
                connector=aiohttp.TCPConnector(
                    limit=STREAM_CONNECTIONS, ssl=_tls_context(), keepalive_timeout=KEEPALIVE_S
                ),
                trace_configs=[trace],
                read_bufsize=READ_BUFFER_BYTES,
            )
            self._loop = loop
        return self._session

    @asynccontextmanager
    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout_s: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST `body`; the response with its body unread. `on_sent` is called once the body is written.

        A kept-alive connection the server closed while it sat idle fails the request before any answer; that
        request is sent once more on a new connection, as httpx does (servers close idle connections after a few
        seconds; the model has not seen a request that never arrived).
        """
        seconds = timeout_s or self.timeout_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
        context = SimpleNamespace(on_sent=on_sent)
        for attempt in range(2):
            try:
                response = await self._current().post(
                    url, data=body, headers=dict(headers), timeout=timeout, trace_request_ctx=context,
                    proxy=self._proxy(url),
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt:
                    raise
        try:
            if on_sent is not None:
                on_sent()  # an empty body sends no chunk: the answer's headers say it was sent
            yield response
        finally:
            response.release()

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None
        self._loop = None

