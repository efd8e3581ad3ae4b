"""Accounts, users, teams, clients and API tokens."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from deskpilot.api.deps import AdminDep, PrincipalDep, SessionDep, StateDep
from deskpilot.api.routing import JSONRoute
from deskpilot.errors import PermissionDenied
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.identity.schemas import (
    AccountOut,
    ClientCreate,
    ClientOut,
    TeamCreate,
    TeamOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["identity"], route_class=JSONRoute)


@router.get("/me", operation_id="get_me")
async def get_me(principal: PrincipalDep, session: SessionDep) -> UserOut:
    return UserOut.model_validate(await identity.get_user(session, principal.user_id))


@router.get("/account", operation_id="get_account")
async def get_account(principal: PrincipalDep, session: SessionDep) -> AccountOut:
    return AccountOut.model_validate(await identity.get_account(session, principal.account_id))


# --- users ----------------------------------------------------------------------------------


@router.get("/users", operation_id="list_users")
async def list_users(principal: PrincipalDep, session: SessionDep, team_id: uuid.UUID | None = None) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in await identity.list_users(session, team_id=team_id)]


@router.post("/users", operation_id="create_user", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, principal: AdminDep, session: SessionDep) -> UserOut:
    if body.role is Role.OWNER and principal.role is not Role.OWNER:
        raise PermissionDenied("only an owner can create another owner")
    user = await identity.create_user(
        session, account_id=principal.account_id, email=body.email, name=body.name, role=body.role,
        password=body.password, team_id=body.team_id,
    )
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="user.create",
                 resource_type="user", resource_id=user.id, details={"role": body.role.value})
    await session.commit()
    return UserOut.model_validate(user)


@router.get("/users/{user_id}", operation_id="get_user")
async def get_user(user_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> UserOut:
    return UserOut.model_validate(await identity.get_user(session, user_id))


@router.patch("/users/{user_id}", operation_id="update_user")
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, principal: AdminDep, state: StateDep, session: SessionDep
) -> UserOut:
    if body.role is Role.OWNER and principal.role is not Role.OWNER:
        raise PermissionDenied("only an owner can make another user an owner")
    fields = body.model_dump(exclude_unset=True)
    user = await identity.update_user(
        session, user_id, name=body.name, role=body.role, team_id=body.team_id,
        clear_team="team_id" in fields and body.team_id is None, is_active=body.is_active,
    )
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="user.update",
                 resource_type="user", resource_id=user.id, details={k: str(v) for k, v in fields.items()})
    await session.commit()
    await identity.announce_invalidation(state.pubsub, user_id=user.id)
    return UserOut.model_validate(user)


# --- teams ----------------------------------------------------------------------------------


@router.get("/teams", operation_id="list_teams")
async def list_teams(principal: PrincipalDep, session: SessionDep) -> list[TeamOut]:
    return [TeamOut.model_validate(t) for t in await identity.list_teams(session)]


@router.post("/teams", operation_id="create_team", status_code=status.HTTP_201_CREATED)
async def create_team(body: TeamCreate, principal: AdminDep, session: SessionDep) -> TeamOut:
    team = await identity.create_team(session, account_id=principal.account_id, name=body.name)
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="team.create",
                 resource_type="team", resource_id=team.id)
    await session.commit()
    return TeamOut.model_validate(team)


@router.get("/teams/{team_id}", operation_id="get_team")
async def get_team(team_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> TeamOut:
    return TeamOut.model_validate(await identity.get_team(session, team_id))


# --- clients --------------------------------------------------------------------------------


@router.get("/clients", operation_id="list_clients")
async def list_clients(principal: PrincipalDep, session: SessionDep) -> list[ClientOut]:
    return [ClientOut.model_validate(c) for c in await identity.list_clients(session)]


@router.post("/clients", operation_id="create_client", status_code=status.HTTP_201_CREATED)
async def create_client(body: ClientCreate, principal: AdminDep, session: SessionDep) -> ClientOut:
    client = await identity.create_client(
        session, account_id=principal.account_id, name=body.name, external_ref=body.external_ref
    )
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="client.create",
                 resource_type="client", resource_id=client.id)
    await session.commit()
    return ClientOut.model_validate(client)


@router.get("/clients/{client_id}", operation_id="get_client")
async def get_client(client_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> ClientOut:
    return ClientOut.model_validate(await identity.get_client(session, client_id))


# --- API tokens -----------------------------------------------------------------------------


@router.get("/tokens", operation_id="list_tokens")
async def list_tokens(principal: PrincipalDep, session: SessionDep) -> list[TokenOut]:
    # Admins see every token of the account so they can revoke leaked ones; others see their own.
    user_filter = None if principal.can(Role.ADMIN) else principal.user_id
    return [TokenOut.model_validate(t) for t in await identity.list_api_tokens(session, user_id=user_filter)]


@router.post("/tokens", operation_id="create_token", status_code=status.HTTP_201_CREATED)
async def create_token(body: TokenCreate, principal: PrincipalDep, session: SessionDep) -> TokenCreated:
    user = await identity.get_user(session, principal.user_id)
    issued = await identity.create_api_token(session, user=user, name=body.name, expires_at=body.expires_at)
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="token.create",
                 resource_type="api_token", resource_id=issued.token.id)
    await session.commit()
    return TokenCreated(**TokenOut.model_validate(issued.token).model_dump(), secret=issued.secret)


@router.delete("/tokens/{token_id}", operation_id="revoke_token")
async def revoke_token(
    token_id: uuid.UUID, principal: PrincipalDep, state: StateDep, session: SessionDep
) -> TokenOut:
    token = await identity.get_api_token(session, token_id)
    if token.user_id != principal.user_id and not principal.can(Role.ADMIN):
        raise PermissionDenied("only an admin can revoke another user's token")
    token = await identity.revoke_api_token(session, token_id)
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="token.revoke",
                 resource_type="api_token", resource_id=token.id)
    await session.commit()
    await identity.announce_invalidation(state.pubsub, token_id=token.id)
    return TokenOut.model_validate(token)
