"""The application's long-lived parts, built once in create_app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Final

import httpx

from deskpilot.background import running
from deskpilot.chat.context import ContextCache
from deskpilot.chat.relay import TurnRelay
from deskpilot.chat.stream import TurnStreams
from deskpilot.errors import DeskpilotError
from deskpilot.events.pubsub import PubSub, make_pubsub
from deskpilot.identity import service as identity
from deskpilot.identity.token_cache import INVALIDATIONS_CHANNEL, apply_invalidation, token_cache
from deskpilot.jobs import JobBackend, JobContext, make_job_backend, registry
from deskpilot.llm import LLM, Message
from deskpilot.llm.recording import SqlRecorder
from deskpilot.pilot.engine import conversation_cache
from deskpilot.security.cookies import SessionSigner
from deskpilot.security.crypto import SecretBox
from deskpilot.security.throttle import FailureWindow
from deskpilot.settings import Settings
from deskpilot.storage import Database
from deskpilot.storage.versioned_cache import VersionedCache

logger = logging.getLogger(__name__)
# A lost pub/sub connection is tried again after this long; meanwhile cached authentications expire by their TTL.
INVALIDATIONS_RETRY_S: Final = 5.0
# Generous: the offices of an MSP's clients sign in from behind one NAT address.
SIGN_IN_FAILURES_PER_ADDRESS: Final = 30
SIGN_IN_WINDOW_S: Final = 15 * 60.0


@dataclass
class AppState:
    settings: Settings
    db: Database
    secrets: SecretBox
    signer: SessionSigner
    pubsub: PubSub
    llm: LLM
    # One pooled client for outbound integrations (PSA, channels); closed with the app.
    http: httpx.AsyncClient
    jobs: JobBackend = field(init=False)
    # Chat turns run detached from their requests; shutdown cancels them and they store what they have.
    # With Redis, several processes may serve one chat: a turn's frames are relayed so that a client reconnecting
    # to another process follows it live.
    chat_streams: TurnStreams = field(init=False)
    chat_contexts: ContextCache = field(init=False, default_factory=ContextCache)
    pilot_conversations: VersionedCache[tuple[Message, ...]] = field(init=False, default_factory=conversation_cache)
    # Wrong sign-ins per client address, across every email (a password spray); per process.
    sign_in_failures: FailureWindow = field(
        init=False, default_factory=lambda: FailureWindow(SIGN_IN_FAILURES_PER_ADDRESS, SIGN_IN_WINDOW_S)
    )
    # Wrong sign-ins per email, known or not, so that a pause does not tell who has an account (the audit log
    # counts a known email's failures across processes too).
    email_failures: FailureWindow = field(
        init=False,
        default_factory=lambda: FailureWindow(
            identity.LOGIN_FAILURES_ALLOWED, identity.LOGIN_FAILURE_WINDOW.total_seconds()
        ),
    )
    _started: bool = field(init=False, default=False)
    # What runs beside the requests for the app's lifetime (SQLite WAL checkpoints).
    _background: contextlib.AsyncExitStack = field(init=False, default_factory=contextlib.AsyncExitStack)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        context = JobContext(settings=self.settings, database=self.db, pubsub=self.pubsub, llm=self.llm)
        self.jobs = make_job_backend(self.settings, registry, context)
        url = self.settings.redis.url
        self.chat_streams = TurnStreams(relay=TurnRelay.from_url(url) if url else None)

    @classmethod
    def build(cls, settings: Settings, *, llm: LLM | None = None, pubsub: PubSub | None = None) -> AppState:
        db = Database(settings.database.url, echo=settings.database.echo, pool_size=settings.database.pool_size)
        return cls(
            settings=settings,
            db=db,
            secrets=SecretBox([k.get_secret_value() for k in settings.security.encryption_keys]),
            signer=SessionSigner(
                settings.security.secret_key.get_secret_value(), max_age_s=settings.security.session_max_age_s
            ),
            pubsub=pubsub or make_pubsub(settings),
            llm=llm or LLM(settings.llm, recorder=SqlRecorder(db)),
            http=httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)),
        )

    async def start(self) -> None:
        """Start background parts once the event loop runs."""
        if not self._started:
            self._started = True
            await self._background.enter_async_context(self.db.checkpoints())
            # For the app's lifetime: drop the cached token authentications a request of any process sharing the
            # pub/sub voided (`identity.announce_invalidation`).
            await self._background.enter_async_context(
                running(self._forget_invalidated(), name="token-cache-invalidations")
            )
            await self.jobs.start()

    async def _forget_invalidated(self) -> None:
        while not self._closed:
            try:
                async with self.pubsub.subscribe(INVALIDATIONS_CHANNEL) as subscription:
                    async for message in subscription:
                        apply_invalidation(token_cache, message)
            except DeskpilotError:
                if self._closed:
                    return
                logger.warning("token-cache invalidations not received; listening again in %s s",
                               INVALIDATIONS_RETRY_S, exc_info=True)
            await asyncio.sleep(INVALIDATIONS_RETRY_S)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.chat_streams.shutdown()
        await self.jobs.stop()
        await self._background.aclose()
        await self.pubsub.close()
        await self.http.aclose()
        await self.db.dispose()
