"""Shared parts of the Pilot benchmarks: the scripted replies, a migrated database with a tenant, percentiles."""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event

from deskpilot.all_models import Base
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.llm import Message
from deskpilot.llm.messages import RequestParams
from deskpilot.llm.testing import Reply
from deskpilot.pilot.access import Caller
from deskpilot.pilot.schemas import IntakeClassification, SessionCreate, StepReply, StepResponse
from deskpilot.storage import Database, batch, migrations

INTAKE = SessionCreate(
    text=(
        "Client laptop VPN drops every now and then since the firewall firmware update last week; "
        "users have to reconnect the FortiClient VPN several times a day."
    )
)
CLASSIFICATION = IntakeClassification(
    problem_summary="VPN connection drops repeatedly since a firewall firmware update",
    problem_domain="networking",
    key_symptoms=["VPN disconnects", "after firmware update", "several times a day"],
    urgency="medium",
)
# A fixed question step of about 1.3 kB as JSON, the size PERF_NOTES measured the peers with.
STEP = StepReply.model_validate(
    {
        "type": "question",
        "content": "Does the VPN disconnect at a regular interval, for example every 60 minutes, or at random moments?",
        "reasoning": (
            "A fixed interval points to a rekey or idle-timeout setting on the gateway, while random drops point "
            "to the client's network (Wi-Fi roaming, power saving on the adapter) or to an overloaded concentrator. "
            "The firmware update may also have reset the phase 2 lifetime or enabled DPD with a shorter timeout, "
            "which would show as drops at a fixed interval for every user at once. Asking for the pattern first "
            "splits the two halves of the problem with one answer."
        ),
        "context_message": (
            "Knowing the pattern tells us whether to look at the firewall's IKE lifetime or at the laptop's adapter. "
            "Check the VPN client's log for the disconnect times if you are unsure."
        ),
        "confidence": 0.42,
        "options": [
            {"label": "Every hour, like clockwork", "value": "fixed_interval",
             "followup_hint": "check IKE/IPsec lifetime"},
            {"label": "Random, several times a day", "value": "random", "followup_hint": "check adapter power saving"},
            {"label": "Only on Wi-Fi, never on cable", "value": "wifi_only", "followup_hint": "check roaming settings"},
            {"label": "I don't know yet", "value": "unknown"},
        ],
        "allow_free_text": True,
        "allow_skip": True,
    }
)
STEP_JSON = STEP.model_dump_json(exclude_none=True)
CLASSIFICATION_JSON = CLASSIFICATION.model_dump_json()
CLASSIFICATION_NAME = IntakeClassification.__name__
# Every turn answers the same option, with a short free-text remark as engineers often add.
RESPONSE = StepResponse(selected_option="random", free_text_input="Mostly after lunch, on the office Wi-Fi.")
STEP_TOKENS = (3_400, 320)
CLASSIFY_TOKENS = (260, 60)


CLASSIFY_REPLY = Reply(text=CLASSIFICATION_JSON, input_tokens=CLASSIFY_TOKENS[0], output_tokens=CLASSIFY_TOKENS[1])
STEP_REPLY = Reply(text=STEP_JSON, input_tokens=STEP_TOKENS[0], output_tokens=STEP_TOKENS[1])


def scripted_reply(_messages: Sequence[Message], params: RequestParams) -> Reply:
    """The zero-latency model: the classification for the triage call, the fixed step for every other call.

    Token counts are given, as a provider reports them, so that the test model does not estimate them.
    """
    if params.output is not None and params.output.name == CLASSIFICATION_NAME:
        return CLASSIFY_REPLY
    return STEP_REPLY


@dataclass(frozen=True, slots=True)
class Tenant:
    """An account with a team, one engineer (as the Pilot sees them) and that engineer's API token."""

    account_id: uuid.UUID
    caller: Caller
    token: str


async def prepare(db: Database, name: str = "Bench IT", *, starter: bool = True) -> Tenant:
    """Migrate, create an account with a Service Desk team and an engineer, and load the starter library.

    Users get no password (no Argon2 cost); the engineer's API token authenticates the HTTP benchmark.
    """
    # Alembic drives its own event loop: run it in a thread. Then any table a migration lacks, as the tests do.
    await asyncio.to_thread(migrations.upgrade, db.url)
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    slug = name.lower().replace(" ", "-")
    async with db.system_session() as session:
        boot = await identity.bootstrap(
            session, account_name=name, email=f"owner@{slug}.example", name=f"{name} Owner", password=None
        )
        team = await identity.create_team(session, account_id=boot.account.id, name="Service Desk")
        engineer = await identity.create_user(
            session, account_id=boot.account.id, email=f"erin@{slug}.example", name="Erin Engineer",
            role=Role.ENGINEER, team_id=team.id,
        )
        token = (await identity.create_api_token(session, user=engineer, name="bench")).secret
        account_id = boot.account.id
        await session.commit()
    if starter:
        async with db.session(account_id) as session:
            await knowledge.load_starter_library(session, account_id)
            await session.commit()
    return Tenant(account_id, Caller(engineer.id, account_id, team.id, "Erin Engineer"), token)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (q=0.99: the value 99 % of samples do not exceed)."""
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB"


def fmt_ms(value: float) -> str:
    return f"{value:.2f}"


def as_row(**cells: Any) -> dict[str, str]:
    return {key.replace("_", " "): str(value) for key, value in cells.items()}


class Phases:
    """Wall time spent in wrapped coroutine functions, per turn (the functions are patched, src/ is not edited)."""

    def __init__(self, total_label: str) -> None:
        self.total_label = total_label
        self.spent: dict[str, list[float]] = collections.defaultdict(list)
        self.current: dict[str, float] = collections.defaultdict(float)
        self.originals: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        self.originals.append((owner, name, original))
        current = self.current

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                current[label] += time.perf_counter() - started

        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self.originals):
            setattr(owner, name, original)
        self.originals.clear()

    @contextmanager
    def wrapped(self, phases: Sequence[tuple[Any, str, str]]) -> Iterator[None]:
        for owner, name, label in phases:
            self.wrap(owner, name, label)
        try:
            yield
        finally:
            self.restore()

    def end_turn(self, total_ms: float) -> None:
        for label, seconds in self.current.items():
            self.spent[label].append(seconds * 1000.0)
        self.spent[self.total_label].append(total_ms)
        self.current.clear()


@contextmanager
def count_statements(db: Database) -> Iterator[collections.Counter[str]]:
    """SQL statements and commits through SQLAlchemy, and the statements of units of work (storage/batch.py),
    which run in SQLite's connection thread past SQLAlchemy's events."""
    counter: collections.Counter[str] = collections.Counter()
    engine = db.engine.sync_engine

    def statement(*_args: Any) -> None:
        counter["statements"] += 1

    def commit(*_args: Any) -> None:
        counter["commits"] += 1

    original_apply: Callable[..., Any] = batch._apply

    def apply(conn: Any, prepared: list[Any]) -> Any:
        counter["statements"] += len(prepared)
        return original_apply(conn, prepared)

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    batch._apply = apply
    try:
        yield counter
    finally:
        batch._apply = original_apply
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)

