"""Request dependencies: app state, the authenticated principal, role checks and scoped sessions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.api.state import AppState
from deskpilot.errors import AuthenticationRequired, PermissionDenied
from deskpilot.events.audit import Actor
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role, User
from deskpilot.identity.token_cache import token_cache
from deskpilot.pilot.access import Caller
from deskpilot.pilot.engine import PilotDeps
from deskpilot.security.cookies import ConsoleSession
from deskpilot.security.tokens import hash_token, looks_like_token

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    account_id: uuid.UUID
    email: str
    name: str
    role: Role
    team_id: uuid.UUID | None
    via: Literal["token", "session"]
    console_session: ConsoleSession | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.user_id, self.email)

    def can(self, role: Role) -> bool:
        return self.role.at_least(role)


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    state: AppState = request.app.state.deskpilot
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def _principal_from_token(state: AppState, secret: str) -> Principal:
    """The token's principal: from the short-lived cache (successes only, dropped on revoke), else the database."""
    key = hash_token(secret) if looks_like_token(secret) else None
    if key is not None:
        cached = token_cache.get(key)
        if isinstance(cached, Principal):
            return cached
    async with state.db.system_session() as session:
        token, user = await identity.resolve_api_token(session, secret)
    principal = Principal(
        user_id=user.id, account_id=user.account_id, email=user.email, name=user.name, role=Role(user.role),
        team_id=user.team_id, via="token",
    )
    if key is not None:
        token_cache.put(key, token_id=token.id, user_id=user.id, value=principal)
    return principal


async def principal_from_cookie(state: AppState, cookie: str | None) -> Principal | None:
    if not cookie:
        return None
    console = state.signer.read(cookie)
    if console is None:
        return None
    async with state.db.session(console.account_id) as session:
        user = await session.get(User, console.user_id)
    if user is None or not user.is_active or user.session_epoch != console.epoch:
        return None
    return Principal(
        user_id=user.id, account_id=user.account_id, email=user.email, name=user.name, role=Role(user.role),
        team_id=user.team_id, via="session", console_session=console,
    )


async def get_principal(request: Request, state: StateDep) -> Principal:
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationRequired("Authorization header must be 'Bearer <API token>'")
        principal = await _principal_from_token(state, secret.strip())
    else:
        found = await principal_from_cookie(state, request.cookies.get(state.settings.security.session_cookie))
        if found is None:
            raise AuthenticationRequired("sign in or send an API token as 'Authorization: Bearer <token>'")
        principal = found
        # Cookie auth rides along automatically with cross-site requests: require the CSRF token.
        if request.method not in SAFE_METHODS:
            assert principal.console_session is not None
            if not state.signer.check_csrf(principal.console_session, request.headers.get(CSRF_HEADER)):
                raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header", code="csrf_failed")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_role(role: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if not principal.can(role):
            raise PermissionDenied(f"this action needs the {role.value!r} role or higher")
        return principal

    return check


async def get_session(state: StateDep, principal: PrincipalDep) -> AsyncIterator[AsyncSession]:
    async with state.db.session(principal.account_id) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
EngineerDep = Annotated[Principal, Depends(require_role(Role.ENGINEER))]
LeadDep = Annotated[Principal, Depends(require_role(Role.LEAD))]
AdminDep = Annotated[Principal, Depends(require_role(Role.ADMIN))]


def pilot_deps(state: AppState) -> PilotDeps:
    """The Pilot service's collaborators, all long-lived parts of the app."""
    return PilotDeps(llm=state.llm, secrets=state.secrets, pubsub=state.pubsub, jobs=state.jobs,
                     psa_http_client=state.http, conversations=state.pilot_conversations)


def pilot_caller(principal: Principal) -> Caller:
    return Caller(user_id=principal.user_id, account_id=principal.account_id, team_id=principal.team_id,
                  name=principal.name)
