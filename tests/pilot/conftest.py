"""Pilot fixtures: a migrated SQLite copy, an account with engineers, scripted models and step replies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.events.pubsub import InProcessPubSub
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.llm import LLM, MemoryRecorder
from deskpilot.llm.testing import Reply, ScriptedModel
from deskpilot.pilot import service
from deskpilot.pilot.access import Caller
from deskpilot.security.crypto import SecretBox
from deskpilot.settings import DEV_ENCRYPTION_KEY, Settings
from deskpilot.storage import Database
from tests.conftest import make_tenant

T = TypeVar("T")


@dataclass
class Desk:
    """One account: engineers of the Service Desk team, an engineer of another team, and a way to call the service."""

    db: Database
    account_id: uuid.UUID
    team_id: uuid.UUID
    engineer: Caller
    colleague: Caller
    teammate: Caller
    outsider: Caller
    secrets: SecretBox
    pubsub: InProcessPubSub

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call a service function in its own account-scoped session, as one API request would."""
        async with self.db.session(self.account_id) as session:
            return await fn(session, *args, **kwargs)

    def deps(self, llm: LLM, **kwargs: Any) -> service.PilotDeps:
        return service.PilotDeps(llm=llm, secrets=self.secrets, pubsub=self.pubsub, **kwargs)

    def session(self) -> Any:
        return self.db.session(self.account_id)


async def make_desk(db: Database, name: str = "Acme IT") -> Desk:
    """An account in `db` with the engineers a Desk holds (users without passwords skip Argon2)."""
    slug = name.split()[0].lower()
    tenant = await make_tenant(db, name, password=None)  # type: ignore[arg-type]
    async with db.session(tenant.account_id) as s:
        teammate = await identity.create_user(
            s, account_id=tenant.account_id, email=f"tess@{slug}.example", name="Tess Teammate",
            team_id=tenant.team_id,
        )
        noc = await identity.create_team(s, account_id=tenant.account_id, name="NOC")
        outsider = await identity.create_user(
            s, account_id=tenant.account_id, email=f"olga@{slug}.example", name="Olga Outsider", team_id=noc.id
        )
        await s.commit()
        engineer = Caller(tenant.users[Role.ENGINEER], tenant.account_id, tenant.team_id, "Erin Engineer")
        colleague = Caller(tenant.users[Role.LEAD], tenant.account_id, tenant.team_id, "Lee Lead")
        return Desk(
            db=db, account_id=tenant.account_id, team_id=tenant.team_id, engineer=engineer, colleague=colleague,
            teammate=Caller(teammate.id, tenant.account_id, tenant.team_id, teammate.name),
            outsider=Caller(outsider.id, tenant.account_id, noc.id, outsider.name),
            secrets=SecretBox([DEV_ENCRYPTION_KEY]), pubsub=InProcessPubSub(),
        )


@pytest.fixture
async def desk(settings: Settings) -> AsyncIterator[Desk]:
    db = Database(settings.database.url)
    desk = await make_desk(db)
    yield desk
    await desk.pubsub.close()
    await db.dispose()


def scripted(*items: str | Reply | BaseException) -> tuple[LLM, ScriptedModel, MemoryRecorder]:
    model = ScriptedModel(items)
    recorder = MemoryRecorder()
    return LLM.for_model(model, recorder=recorder), model, recorder


def classification(summary: str = "Outlook keeps prompting for a password", domain: str = "m365") -> Reply:
    return Reply.json({"problem_summary": summary, "problem_domain": domain, "key_symptoms": ["password prompt"],
                       "urgency": "medium"}, input_tokens=50, output_tokens=10)


def question(content: str = "Does the prompt appear in Outlook on the web too?", confidence: float | None = 0.5,
             options: tuple[tuple[str, str], ...] = (("Yes, web too", "web"), ("Desktop only", "desktop")),
             **extra: Any) -> Reply:
    body: dict[str, Any] = {
        "type": "question", "content": content, "reasoning": "split client from account",
        "context_message": "Tells account problems from client problems",
        "options": [{"label": label, "value": value, "followup_hint": None} for label, value in options],
        "allow_free_text": True, "allow_skip": True, **extra,
    }
    if confidence is not None:
        body["confidence"] = confidence
    return Reply.json(body, input_tokens=200, output_tokens=40)


def action(content: str = "Clear the cached credentials in Credential Manager", confidence: float = 0.7,
           **extra: Any) -> Reply:
    return Reply.json({"type": "action", "content": content, "context_message": "Stale credentials are common",
                       "action_type": "instruction", "expected_outcome": "No more prompts", "confidence": confidence,
                       **extra}, input_tokens=220, output_tokens=45)


def resolution(summary: str = "Stale cached credentials; cleared them", confidence: float = 0.95) -> Reply:
    return Reply.json({"type": "resolution_suggestion", "content": "Cached credentials were stale",
                       "resolution_summary": summary, "follow_up_recommendations": ["Watch for 24 hours"],
                       "confidence": confidence}, input_tokens=240, output_tokens=50)


def fork(*labels: str, confidence: float = 0.45) -> Reply:
    return Reply.json({
        "type": "fork", "content": "Two causes fit equally well", "context_message": "Let's check both",
        "fork_reason": "Token broker or profile", "confidence": confidence,
        "options": [{"label": label, "description": f"Check the {label.lower()}"} for label in labels],
    }, input_tokens=230, output_tokens=60)


async def step_count(session: AsyncSession, session_id: uuid.UUID) -> int:
    from sqlalchemy import func, select

    from deskpilot.pilot.models import SessionStep

    return int(await session.scalar(select(func.count()).where(SessionStep.session_id == session_id)) or 0)


async def conversation(desk: Desk, session_id: uuid.UUID) -> list[tuple[str, str]]:
    """The active branch's conversation as the model reads it, `(role, text)` per entry, rebuilt from the rows."""
    from deskpilot.pilot import engine
    from deskpilot.pilot.models import PilotSession

    async with desk.session() as s:
        session = await s.get(PilotSession, session_id)
        assert session is not None
        branch = engine.active_branch(session, await engine.branch_rows(s, session))
        return [(m.role, str(m.content)) for m in await engine.branch_history(s, session, branch)]
