"""Job handlers, their registry, the context they run with and the backend interface."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import pkgutil
import random
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Final

from pydantic import JsonValue

from deskpilot.errors import DeskpilotError, RunFailure, ValidationFailed
from deskpilot.events.pubsub import JsonObject, PubSub
from deskpilot.settings import Settings
from deskpilot.storage import Database

if TYPE_CHECKING:
    from deskpilot.llm import LLM

logger = logging.getLogger(__name__)


class UnknownJob(DeskpilotError):
    """No handler is registered under this job name."""

    code = "unknown_job"
    title = "Unknown job"


class JobBackendStopped(RunFailure):
    """The backend was stopped and accepts no more jobs."""

    code = "jobs_stopped"
    title = "Job backend stopped"


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler may use: settings, the database and pub/sub; plus which run of which job this is.

    The application builds one context; each run gets a copy with `job_id`, `job_name` and
    `attempt` (1 on first delivery, counting retries) filled in.
    """

    settings: Settings
    database: Database
    pubsub: PubSub
    # The application's LLM facade; None in a worker that builds its own from settings.
    llm: LLM | None = None
    job_id: str = ""
    job_name: str = ""
    attempt: int = 0

    def for_job(self, job: Job) -> JobContext:
        return replace(self, job_id=job.id, job_name=job.name, attempt=job.attempt)


JobHandler = Callable[[JobContext, JsonObject], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    """One delivery of a job: its id stays the same across retries, `attempt` counts them."""

    id: str
    name: str
    payload: JsonObject = field(default_factory=dict)
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: after failed attempt n, wait `backoff_s * 2**(n-1)`, capped, with jitter."""

    max_retries: int = 3
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0
    # Scale each delay by a random factor in [0.5, 1] so that jobs failing together do not retry together.
    jitter: bool = True

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before the retry that follows failed `attempt` (1-based)."""
        delay = min(self.max_backoff_s, self.backoff_s * 2.0 ** max(0, attempt - 1))
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    handler: JobHandler
    retry: RetryPolicy


class JobRegistry:
    """Handlers by name. Domains register theirs in their `jobs.py`::

    @registry.job("pilot.analyse_session", retry=RetryPolicy(max_retries=5))
    async def analyse_session(ctx: JobContext, payload: JsonObject) -> None: ...
    """

    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}

    def job(self, name: str, *, retry: RetryPolicy | None = None) -> Callable[[JobHandler], JobHandler]:
        """Decorator registering an async handler under `name`."""

        def decorate(handler: JobHandler) -> JobHandler:
            self.register(name, handler, retry=retry)
            return handler

        return decorate

    def register(self, name: str, handler: JobHandler, *, retry: RetryPolicy | None = None) -> JobSpec:
        existing = self._specs.get(name)
        if existing is not None and _qualified(existing.handler) != _qualified(handler):
            raise ValueError(
                f"job {name!r} is already registered to {_qualified(existing.handler)!r}, not {_qualified(handler)!r}"
            )
        spec = JobSpec(name=name, handler=handler, retry=retry or RetryPolicy())
        self._specs[name] = spec
        return spec

    def get(self, name: str) -> JobSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownJob(f"no job handler is registered as {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)


def _qualified(handler: JobHandler) -> str:
    # Re-importing a module (python -m, reloads) registers an equal function again: that is no conflict.
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"


registry: Final = JobRegistry()
"""The registry domains register into and the worker and server run from."""

# Interface packages are never imported by the core; they hold no handlers.
_NOT_DOMAINS: Final = frozenset({"api", "web", "cli", "worker", "jobs"})


def discover_job_modules(package: str = "deskpilot") -> list[str]:
    """Import `<package>.<domain>.jobs` for every domain that has one, so its handlers are registered."""
    root = importlib.import_module(package)
    found: list[str] = []
    for info in pkgutil.iter_modules(root.__path__):
        if not info.ispkg or info.name in _NOT_DOMAINS:
            continue
        name = f"{package}.{info.name}.jobs"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
            found.append(name)
    logger.debug("job modules imported: %s", found)
    return found


def new_job_id() -> str:
    return str(uuid.uuid4())


def encode_payload(name: str, payload: Mapping[str, JsonValue] | None) -> JsonObject:
    """The payload as a handler will receive it: a fresh JSON round trip, identical on every backend."""
    try:
        decoded: JsonObject = json.loads(json.dumps(dict(payload or {}), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValidationFailed(f"payload of job {name!r} is not JSON: {e}") from e
    return decoded


class JobBackend(ABC):
    """Runs registered jobs somewhere else than the caller, at least once each.

    Usable as an async context manager (`start` on entry, `stop` on exit).
    """

    @abstractmethod
    async def enqueue(
        self, name: str, payload: Mapping[str, JsonValue] | None = None, *, delay_s: float | None = None
    ) -> str:
        """Queue job `name` with a JSON `payload`, to start after `delay_s` seconds; returns the job id."""

    async def start(self) -> None:
        """Begin accepting and running jobs."""
        return None

    async def stop(self) -> None:
        """Stop and release resources."""
        return None

    async def __aenter__(self) -> JobBackend:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
