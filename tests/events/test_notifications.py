"""Notifications service on SQLite and PostgreSQL: store, push after commit, list, mark read, tenant isolation."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from deskpilot.all_models import Base
from deskpilot.errors import ValidationFailed
from deskpilot.events import notifications as service
from deskpilot.events.models import Notification
from deskpilot.events.pubsub import InProcessPubSub, user_channel
from deskpilot.identity import service as identity
from deskpilot.identity.models import Account, Role, Team, User
from deskpilot.storage import Database
from tests.services import pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
        async with database.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield database
        await database.dispose()
        return
    async with pg_database() as url:
        database = Database(url)
        async with database.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield database
        await database.dispose()


@pytest.fixture
async def pubsub() -> AsyncIterator[InProcessPubSub]:
    bus = InProcessPubSub()
    yield bus
    await bus.close()


@dataclass(frozen=True)
class Org:
    account_id: uuid.UUID
    team_id: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    retired: uuid.UUID
    outsider: uuid.UUID


async def make_org(db: Database, name: str) -> Org:
    """An account with a team of two active users, one inactive member and one user outside the team."""
    async with db.system_session() as session:
        account = Account(id=uuid.uuid4(), name=name, slug=f"{name}-{uuid.uuid4().hex[:6]}")
        session.add(account)
        await session.flush()
        team = Team(id=uuid.uuid4(), account_id=account.id, name="Service Desk")
        session.add(team)
        await session.flush()
        ids = {}
        for who, team_id, active in (
            ("alice", team.id, True),
            ("bob", team.id, True),
            ("retired", team.id, False),
            ("outsider", None, True),
        ):
            user = User(
                id=uuid.uuid4(),
                account_id=account.id,
                email=f"{who}@{account.slug}.example",
                name=who.title(),
                role=Role.ENGINEER,
                team_id=team_id,
                is_active=active,
            )
            session.add(user)
            ids[who] = user.id
        await session.commit()
    return Org(account_id=account.id, team_id=team.id, **ids)


@pytest.fixture
async def org(db: Database) -> Org:
    return await make_org(db, "acme")


async def test_notify_commits_then_pushes_to_the_users_channel(db: Database, pubsub: InProcessPubSub, org: Org) -> None:
    async with pubsub.subscribe(user_channel(org.alice)) as bell:
        async with db.session(org.account_id) as session:
            out = await service.notify(
                session,
                pubsub,
                account_id=org.account_id,
                user_id=org.alice,
                kind="session.escalated",
                title="Printer queue stuck at Globex",
                body="Bob handed this over.",
                link="/pilot/123",
            )
        message = await bell.get(timeout_s=2)
        # The message arrives only after the commit: another connection already sees the row.
        async with db.session(org.account_id) as other:
            assert await other.get(Notification, out.id) is not None
    assert message == {
        "type": "notification",
        "id": str(out.id),
        "user_id": str(org.alice),
        "kind": "session.escalated",
        "title": "Printer queue stuck at Globex",
        "body": "Bob handed this over.",
        "link": "/pilot/123",
        "created_at": out.created_at.isoformat().replace("+00:00", "Z"),
        "read_at": None,
    }


async def test_add_notification_leaves_commit_and_push_to_the_caller(
    db: Database, pubsub: InProcessPubSub, org: Org
) -> None:
    async with pubsub.subscribe(user_channel(org.alice)) as bell:
        async with db.session(org.account_id) as session:
            service.add_notification(session, account_id=org.account_id, user_id=org.alice, kind="k", title="lost")
            await session.rollback()
            kept = service.add_notification(
                session, account_id=org.account_id, user_id=org.alice, kind="k", title="kept"
            )
            await session.commit()
        with pytest.raises(TimeoutError):
            await bell.get(timeout_s=0.05)
        await service.publish_notification(pubsub, kept)
        assert (await bell.get(timeout_s=2))["title"] == "kept"
    async with db.session(org.account_id) as session:
        assert [n.title for n in await service.list_notifications(session, org.alice)] == ["kept"]


async def test_notifying_a_team_reaches_active_members_only(db: Database, pubsub: InProcessPubSub, org: Org) -> None:
    async with (
        pubsub.subscribe(user_channel(org.alice)) as alice,
        pubsub.subscribe(user_channel(org.bob)) as bob,
        pubsub.subscribe(user_channel(org.retired)) as retired,
        pubsub.subscribe(user_channel(org.outsider)) as outsider,
    ):
        async with db.session(org.account_id) as session:
            members = await identity.active_team_member_ids(
                session, account_id=org.account_id, team_id=org.team_id, exclude=[org.bob]
            )
            sent = await service.notify_users(
                session,
                pubsub,
                account_id=org.account_id,
                user_ids=members,
                kind="session.escalated",
                title="Needs a pair of eyes",
            )
        assert [n.user_id for n in sent] == [org.alice]
        assert (await alice.get(timeout_s=2))["title"] == "Needs a pair of eyes"
        for quiet in (bob, retired, outsider):
            with pytest.raises(TimeoutError):
                await quiet.get(timeout_s=0.02)
    async with db.session(org.account_id) as session:
        assert await service.unread_count(session, org.alice) == 1
        assert await service.unread_count(session, org.retired) == 0


async def test_list_is_newest_first_with_unread_filter_and_limit(
    db: Database, pubsub: InProcessPubSub, org: Org
) -> None:
    async with db.session(org.account_id) as session:
        for i in range(4):
            await service.notify(session, pubsub, account_id=org.account_id, user_id=org.alice, kind="k", title=f"n{i}")
        await service.notify(session, pubsub, account_id=org.account_id, user_id=org.bob, kind="k", title="bob's")
    async with db.session(org.account_id) as session:
        listed = await service.list_notifications(session, org.alice)
        assert [n.title for n in listed] == ["n3", "n2", "n1", "n0"]
        assert await service.mark_read(session, org.alice, [listed[0].id, listed[2].id]) == 2
        await session.commit()
    async with db.session(org.account_id) as session:
        unread = await service.list_notifications(session, org.alice, unread_only=True)
        assert [n.title for n in unread] == ["n2", "n0"]
        assert [n.title for n in await service.list_notifications(session, org.alice, limit=2)] == ["n3", "n2"]
        read = {n.title: n.read_at for n in await service.list_notifications(session, org.alice)}
        assert read["n3"] is not None
        assert read["n2"] is None


async def test_mark_read_counts_only_what_changed(db: Database, pubsub: InProcessPubSub, org: Org) -> None:
    async with db.session(org.account_id) as session:
        first = await service.notify(session, pubsub, account_id=org.account_id, user_id=org.alice, kind="k", title="a")
        await service.notify(session, pubsub, account_id=org.account_id, user_id=org.alice, kind="k", title="b")
        bobs = await service.notify(session, pubsub, account_id=org.account_id, user_id=org.bob, kind="k", title="c")
        assert await service.unread_count(session, org.alice) == 2
        assert await service.mark_read(session, org.alice, []) == 0
        assert await service.mark_read(session, org.alice, [bobs.id]) == 0
        assert await service.mark_read(session, org.alice, [first.id]) == 1
        assert await service.mark_read(session, org.alice, [first.id]) == 0
        assert await service.mark_read(session, org.alice, "all") == 1
        await session.commit()
    async with db.session(org.account_id) as session:
        assert await service.unread_count(session, org.alice) == 0
        assert await service.unread_count(session, org.bob) == 1


async def test_another_account_never_sees_or_changes_them(db: Database, pubsub: InProcessPubSub, org: Org) -> None:
    other = await make_org(db, "globex")
    async with db.session(org.account_id) as session:
        mine = await service.notify(
            session, pubsub, account_id=org.account_id, user_id=org.alice, kind="k", title="acme only"
        )
    async with db.session(other.account_id) as session:
        for user in (other.alice, org.alice):
            assert await service.list_notifications(session, user) == []
            assert await service.unread_count(session, user) == 0
        assert await service.mark_read(session, org.alice, "all") == 0
        assert await service.mark_read(session, org.alice, [mine.id]) == 0
        await session.commit()
    async with db.session(org.account_id) as session:
        assert [n.id for n in await service.list_notifications(session, org.alice, unread_only=True)] == [mine.id]
    async with db.system_session() as session:
        total = await session.scalar(select(func.count()).select_from(Notification))
    assert total == 1


async def test_a_system_session_notifies_with_an_explicit_account(
    db: Database, pubsub: InProcessPubSub, org: Org
) -> None:
    async with db.system_session() as session:
        members = await identity.active_team_member_ids(session, account_id=org.account_id, team_id=org.team_id)
        sent = await service.notify_users(
            session, pubsub, account_id=org.account_id, user_ids=members, kind="automation.failed", title="Run 7"
        )
    assert sorted(n.user_id for n in sent) == sorted([org.alice, org.bob])
    async with db.session(org.account_id) as session:
        assert await service.unread_count(session, org.bob) == 1


async def test_long_titles_are_shortened_and_bad_fields_refused(db: Database, org: Org) -> None:
    async with db.session(org.account_id) as session:
        out = service.add_notification(session, account_id=org.account_id, user_id=org.alice, kind="k", title="x" * 400)
        assert len(out.title) == service.MAX_TITLE
        assert out.title.endswith("…")
        await session.commit()
        with pytest.raises(ValidationFailed):
            service.add_notification(session, account_id=org.account_id, user_id=org.alice, kind="", title="t")
        with pytest.raises(ValidationFailed):
            service.add_notification(
                session, account_id=org.account_id, user_id=org.alice, kind="k", title="t", link="/" + "x" * 600
            )


async def test_a_failed_push_keeps_the_stored_notification(
    db: Database, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    closed = InProcessPubSub()
    await closed.close()
    async with db.session(org.account_id) as session:
        with caplog.at_level(logging.WARNING, logger="deskpilot.events.notifications"):
            await service.notify(session, closed, account_id=org.account_id, user_id=org.alice, kind="k", title="t")
    assert "stored but not pushed" in caplog.text
    async with db.session(org.account_id) as session:
        assert await service.unread_count(session, org.alice) == 1
