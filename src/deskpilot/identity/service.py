"""Identity service: accounts, users, teams, clients, API tokens and authentication.

Functions take an account-scoped AsyncSession and do not commit: the caller owns the transaction.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import DeskpilotError, NotFound
from deskpilot.events import audit
from deskpilot.events.models import AuditEvent
from deskpilot.events.pubsub import PubSub
from deskpilot.identity.errors import (
    ClientNotFound,
    EmailTaken,
    InvalidCredentials,
    LastOwner,
    NameTaken,
    TeamNotFound,
    TokenNotFound,
    TooManyFailedLogins,
    UserNotFound,
    WeakPassword,
)
from deskpilot.identity.models import Account, ApiToken, Client, Role, Team, User
from deskpilot.identity.token_cache import INVALIDATIONS_CHANNEL, invalidation, token_cache
from deskpilot.security.passwords import DUMMY_HASH, MIN_PASSWORD_LENGTH, hash_password, verify_password
from deskpilot.security.tokens import generate_token, hash_token, looks_like_token
from deskpilot.storage import utcnow

logger = logging.getLogger(__name__)

# Writing last_used_at on every request would turn each read into a write.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "account"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


# --- accounts -------------------------------------------------------------------------------


async def create_account(session: AsyncSession, name: str, slug: str | None = None) -> Account:
    """Create a tenant; `session` must not be scoped to an account (system or unscoped session)."""
    base = slug or slugify(name)
    candidate, n = base, 1
    while await session.scalar(select(Account.id).where(Account.slug == candidate)) is not None:
        n += 1
        candidate = f"{base}-{n}"
    account = Account(name=name, slug=candidate)
    session.add(account)
    await session.flush()
    return account


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound(f"account {str(account_id)!r} not found")
    return account


# --- users ----------------------------------------------------------------------------------


async def _email_in_use(session: AsyncSession, email: str) -> bool:
    # Emails are unique across accounts; look beyond this session's scope without reading any row.
    stmt = select(func.count()).select_from(User).where(User.email == email)
    return bool(await session.scalar(stmt.execution_options(skip_tenant_scope=True)))


async def create_user(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    email: str,
    name: str,
    role: Role = Role.ENGINEER,
    password: str | None = None,
    team_id: uuid.UUID | None = None,
) -> User:
    email = normalise_email(email)
    if await _email_in_use(session, email):
        raise EmailTaken(f"a user with email {email!r} already exists")
    if team_id is not None:
        await get_team(session, team_id)
    if password is not None:
        _check_password(password)
    user = User(
        account_id=account_id,
        email=email,
        name=name,
        role=role,
        team_id=team_id,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"user {str(user_id)!r} not found")
    return user


async def list_users(session: AsyncSession, *, team_id: uuid.UUID | None = None) -> Sequence[User]:
    stmt = select(User).order_by(User.name)
    if team_id is not None:
        stmt = stmt.where(User.team_id == team_id)
    return (await session.scalars(stmt)).all()


async def active_team_member_ids(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    team_id: uuid.UUID,
    exclude: Iterable[uuid.UUID] = (),
) -> list[uuid.UUID]:
    """Who to tell about a team's work: its active users, less `exclude` (e.g. the actor).

    The explicit account filter keeps this right in a system session too, where no scope applies.
    """
    excluded = set(exclude)
    ids = await session.scalars(
        select(User.id)
        .where(User.account_id == account_id, User.team_id == team_id, User.is_active.is_(True))
        .order_by(User.id)
    )
    return [uid for uid in ids if uid not in excluded]


async def update_user(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    name: str | None = None,
    role: Role | None = None,
    team_id: uuid.UUID | None = None,
    clear_team: bool = False,
    is_active: bool | None = None,
) -> User:
    user = await get_user(session, user_id)
    demoting_owner = user.role is Role.OWNER and (
        (role is not None and role is not Role.OWNER) or is_active is False
    )
    if demoting_owner:
        owners = await session.scalar(
            select(func.count()).select_from(User).where(User.role == Role.OWNER, User.is_active.is_(True))
        )
        if (owners or 0) <= 1:
            raise LastOwner("the account must keep at least one active owner")
    if name is not None:
        user.name = name
    if role is not None:
        user.role = role
    if team_id is not None:
        await get_team(session, team_id)
        user.team_id = team_id
    elif clear_team:
        user.team_id = None
    if is_active is not None:
        user.is_active = is_active
    await session.flush()
    # A role, team or activity change must not wait for cached token authentications to expire.
    token_cache.forget_user(user.id)
    return user


async def set_password(session: AsyncSession, user_id: uuid.UUID, password: str) -> None:
    _check_password(password)
    user = await get_user(session, user_id)
    user.password_hash = hash_password(password)
    # Whoever signed in with the old password is signed out.
    await end_console_sessions(session, user_id)


async def announce_invalidation(
    pubsub: PubSub, *, token_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> None:
    """After the commit that revoked a token or changed a user: every process sharing `pubsub` drops its cached
    authentications of it. A pub/sub failure is logged, not raised (the change is committed; caches expire)."""
    try:
        await pubsub.publish(INVALIDATIONS_CHANNEL, invalidation(token_id=token_id, user_id=user_id))
    except DeskpilotError:
        logger.warning("could not announce a token-cache invalidation; other processes see it within their TTL",
                       exc_info=True)


async def end_console_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Sign the user out of every console session (every browser): their cookies name an older epoch."""
    user = await get_user(session, user_id)
    user.session_epoch += 1
    await session.flush()


# Wrong passwords for one email within the window, after which its sign-ins pause until the oldest of them ages out.
LOGIN_FAILURES_ALLOWED: Final = 5
LOGIN_FAILURE_WINDOW: Final = timedelta(minutes=15)
LOGIN_FAILED_ACTION: Final = "user.login_failed"


async def _login_pause(session: AsyncSession, user: User, now: datetime) -> timedelta | None:
    """How long the user's sign-ins stay paused, or None. Failures are the audit log's `user.login_failed`
    events, so every process sees the same count."""
    failures = (await session.scalars(
        select(AuditEvent.created_at)
        .where(
            AuditEvent.account_id == user.account_id, AuditEvent.resource_type == "user",
            AuditEvent.resource_id == str(user.id), AuditEvent.action == LOGIN_FAILED_ACTION,
            AuditEvent.created_at >= now - LOGIN_FAILURE_WINDOW,
        )
        .order_by(AuditEvent.created_at.desc())
        .limit(LOGIN_FAILURES_ALLOWED)
    )).all()
    if len(failures) < LOGIN_FAILURES_ALLOWED:
        return None
    return failures[-1] + LOGIN_FAILURE_WINDOW - now


async def authenticate_password(session: AsyncSession, email: str, password: str) -> User:
    """Check a login; `session` must be a system session (the account is not known yet)."""
    user = await session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None or not user.password_hash or not user.is_active:
        verify_password(DUMMY_HASH, password)
        raise InvalidCredentials("email or password is wrong")
    pause = await _login_pause(session, user, utcnow())
    if pause is not None:
        # Refused before the password is checked: guessing on cannot tell a right password from a wrong one.
        seconds = max(1, math.ceil(pause.total_seconds()))
        raise TooManyFailedLogins(
            f"Too many wrong passwords for {user.email}: sign-ins pause for {math.ceil(seconds / 60)} min",
            extra={"retry_after_s": seconds},
        )
    if not verify_password(user.password_hash, password):
        raise InvalidCredentials("email or password is wrong")
    user.last_login_at = utcnow()
    audit.record(
        session,
        account_id=user.account_id,
        actor=audit.Actor(user.id, user.email),
        action="user.login",
        resource_type="user",
        resource_id=user.id,
    )
    await session.flush()
    return user


# --- teams ----------------------------------------------------------------------------------


async def create_team(session: AsyncSession, *, account_id: uuid.UUID, name: str) -> Team:
    if await session.scalar(select(Team.id).where(Team.account_id == account_id, Team.name == name)) is not None:
        raise NameTaken(f"a team named {name!r} already exists")
    team = Team(account_id=account_id, name=name)
    session.add(team)
    await session.flush()
    return team


async def get_team(session: AsyncSession, team_id: uuid.UUID) -> Team:
    team = await session.get(Team, team_id)
    if team is None:
        raise TeamNotFound(f"team {str(team_id)!r} not found")
    return team


async def list_teams(session: AsyncSession) -> Sequence[Team]:
    return (await session.scalars(select(Team).order_by(Team.name))).all()


# --- clients --------------------------------------------------------------------------------


async def create_client(
    session: AsyncSession, *, account_id: uuid.UUID, name: str, external_ref: str | None = None
) -> Client:
    if await session.scalar(select(Client.id).where(Client.account_id == account_id, Client.name == name)) is not None:
        raise NameTaken(f"a client named {name!r} already exists")
    client = Client(account_id=account_id, name=name, external_ref=external_ref)
    session.add(client)
    await session.flush()
    return client


async def get_client(session: AsyncSession, client_id: uuid.UUID) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise ClientNotFound(f"client {str(client_id)!r} not found")
    return client


async def list_clients(session: AsyncSession) -> Sequence[Client]:
    return (await session.scalars(select(Client).order_by(Client.name))).all()


# --- API tokens -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: ApiToken
    secret: str


async def create_api_token(
    session: AsyncSession, *, user: User, name: str, expires_at: datetime | None = None
) -> IssuedToken:
    new = generate_token()
    token = ApiToken(
        account_id=user.account_id,
        user_id=user.id,
        name=name,
        prefix=new.prefix,
        token_hash=new.token_hash,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return IssuedToken(token=token, secret=new.secret)


async def list_api_tokens(session: AsyncSession, *, user_id: uuid.UUID | None = None) -> Sequence[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at.desc())
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    return (await session.scalars(stmt)).all()


async def get_api_token(session: AsyncSession, token_id: uuid.UUID) -> ApiToken:
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise TokenNotFound(f"API token {str(token_id)!r} not found")
    return token


async def revoke_api_token(session: AsyncSession, token_id: uuid.UUID) -> ApiToken:
    token = await get_api_token(session, token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        await session.flush()
    # Refused from now on in this process, not once a cached authentication expires.
    token_cache.forget_token(token.id)
    return token


async def resolve_api_token(session: AsyncSession, secret: str) -> tuple[ApiToken, User]:
    """Find the live token and its active user; `session` must be a system session."""
    if not looks_like_token(secret):
        raise InvalidCredentials("API token is malformed")
    token = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    now = utcnow()
    if token is None or token.revoked_at is not None:
        raise InvalidCredentials("API token is unknown or revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise InvalidCredentials("API token has expired")
    user = await session.get(User, token.user_id)
    if user is None or not user.is_active:
        raise InvalidCredentials("API token belongs to an inactive user")
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        token.last_used_at = now
        await session.commit()
    return token, user


# --- bootstrap ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    account: Account
    owner: User
    token: IssuedToken


async def bootstrap(
    session: AsyncSession, *, account_name: str, email: str, name: str, password: str | None
) -> Bootstrapped:
    """Create an account with its owner and a first API token in one transaction (system session)."""
    account = await create_account(session, account_name)
    owner = await create_user(
        session, account_id=account.id, email=email, name=name, role=Role.OWNER, password=password
    )
    issued = await create_api_token(session, user=owner, name="bootstrap")
    audit.record(
        session,
        account_id=account.id,
        actor=audit.Actor(owner.id, owner.email),
        action="account.bootstrap",
        resource_type="account",
        resource_id=account.id,
    )
    return Bootstrapped(account=account, owner=owner, token=issued)
