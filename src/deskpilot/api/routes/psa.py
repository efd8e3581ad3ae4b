"""PSA connections, ticket search and context, member mappings and pushes."""

from __future__ import annotations

import uuid
from typing import Annotated

import httpx
from fastapi import APIRouter, Body, Depends, Path, Query, status

from deskpilot.api.deps import AdminDep, EngineerDep, SessionDep, StateDep
from deskpilot.api.routing import JSONRoute
from deskpilot.events import audit
from deskpilot.psa import service as psa
from deskpilot.psa.base import TicketContext, TicketSummary
from deskpilot.psa.models import PushStatus
from deskpilot.psa.schemas import (
    AutoMapOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionTestOut,
    ConnectionUpdate,
    MemberMappingOut,
    MemberMappingUpdate,
    PushOut,
)

router = APIRouter(prefix="/api/v1/psa", tags=["psa"], route_class=JSONRoute)

PSA_TIMEOUT_S = 20.0


async def get_http_client(state: StateDep) -> httpx.AsyncClient:
    """The application's pooled outbound client; connections and TLS sessions are reused across requests."""
    return state.http


HttpDep = Annotated[httpx.AsyncClient, Depends(get_http_client)]


# --- connections ----------------------------------------------------------------------------


@router.get("/connections", operation_id="list_psa_connections")
async def list_psa_connections(
    principal: EngineerDep, state: StateDep, session: SessionDep, include_inactive: bool = False
) -> list[ConnectionOut]:
    connections = await psa.list_connections(session, include_inactive=include_inactive)
    return [psa.connection_view(c, state.secrets) for c in connections]


@router.post("/connections", operation_id="create_psa_connection", status_code=status.HTTP_201_CREATED)
async def create_psa_connection(
    body: Annotated[ConnectionCreate, Body()], principal: AdminDep, state: StateDep, session: SessionDep
) -> ConnectionOut:
    connection = await psa.create_connection(
        session, state.secrets, account_id=principal.account_id, name=body.name, kind=body.kind,
        settings=body.settings.model_dump(mode="json", exclude_none=True),
        credentials=body.credentials.model_dump(),
    )
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="psa_connection.create",
                 resource_type="psa_connection", resource_id=connection.id, details={"kind": connection.kind.value})
    await session.commit()
    return psa.connection_view(connection, state.secrets)


@router.get("/connections/{connection_id}", operation_id="get_psa_connection")
async def get_psa_connection(
    connection_id: uuid.UUID, principal: EngineerDep, state: StateDep, session: SessionDep
) -> ConnectionOut:
    return psa.connection_view(await psa.get_connection(session, connection_id), state.secrets)


@router.patch("/connections/{connection_id}", operation_id="update_psa_connection")
async def update_psa_connection(
    connection_id: uuid.UUID, body: ConnectionUpdate, principal: AdminDep, state: StateDep, session: SessionDep
) -> ConnectionOut:
    connection = await psa.update_connection(
        session, state.secrets, connection_id, name=body.name, settings=body.settings,
        credentials=body.credentials, is_active=body.is_active,
    )
    # Names of what changed, never the values: credentials must not reach the audit log.
    changed = sorted(
        [k for k in ("name", "is_active") if k in body.model_fields_set]
        + [f"settings.{k}" for k in body.settings or {}]
        + [f"credentials.{k}" for k, v in (body.credentials or {}).items() if v]
    )
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="psa_connection.update",
                 resource_type="psa_connection", resource_id=connection.id, details={"changed": changed})
    await session.commit()
    return psa.connection_view(connection, state.secrets)


@router.delete("/connections/{connection_id}", operation_id="delete_psa_connection")
async def delete_psa_connection(
    connection_id: uuid.UUID, principal: AdminDep, state: StateDep, session: SessionDep
) -> ConnectionOut:
    connection = await psa.delete_connection(session, connection_id)
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="psa_connection.delete",
                 resource_type="psa_connection", resource_id=connection.id)
    await session.commit()
    return psa.connection_view(connection, state.secrets)


@router.post("/connections/{connection_id}/test", operation_id="test_psa_connection")
async def test_psa_connection(
    connection_id: uuid.UUID, principal: AdminDep, state: StateDep, session: SessionDep, http: HttpDep
) -> ConnectionTestOut:
    result = await psa.test_connection(session, state.secrets, connection_id, http_client=http)
    await session.commit()
    return result


# --- tickets --------------------------------------------------------------------------------


@router.get("/connections/{connection_id}/tickets", operation_id="search_psa_tickets")
async def search_psa_tickets(
    connection_id: uuid.UUID,
    principal: EngineerDep,
    state: StateDep,
    session: SessionDep,
    http: HttpDep,
    q: Annotated[str, Query(max_length=200)] = "",
    company: Annotated[str | None, Query(max_length=100)] = None,
    open_only: bool = True,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[TicketSummary]:
    return await psa.search_tickets(
        session, state.secrets, connection_id, q, company=company, open_only=open_only, limit=limit, http_client=http
    )


@router.get("/connections/{connection_id}/tickets/{ticket_id}", operation_id="get_psa_ticket_context")
async def get_psa_ticket_context(
    connection_id: uuid.UUID,
    ticket_id: Annotated[str, Path(max_length=64)],
    principal: EngineerDep,
    state: StateDep,
    session: SessionDep,
    http: HttpDep,
) -> TicketContext:
    return await psa.get_ticket_context(session, state.secrets, connection_id, ticket_id, http_client=http)


# --- member mappings ------------------------------------------------------------------------


@router.get("/member-mappings", operation_id="list_member_mappings")
async def list_member_mappings(
    principal: AdminDep, session: SessionDep, connection_id: uuid.UUID | None = None
) -> list[MemberMappingOut]:
    return await psa.list_member_mappings(session, connection_id)


@router.post("/member-mappings/auto", operation_id="auto_map_members")
async def auto_map_members(
    principal: AdminDep, state: StateDep, session: SessionDep, http: HttpDep, connection_id: uuid.UUID | None = None
) -> AutoMapOut:
    result = await psa.auto_map_members(session, state.secrets, connection_id=connection_id, http_client=http)
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="psa_member_mapping.auto",
                 resource_type="psa_connection", resource_id=result.connection_id,
                 details={"matched": result.matched, "removed": result.removed})
    await session.commit()
    return result


@router.get("/member-mappings/{user_id}", operation_id="get_member_mapping")
async def get_member_mapping(
    user_id: uuid.UUID, principal: AdminDep, session: SessionDep, connection_id: uuid.UUID | None = None
) -> MemberMappingOut:
    return await psa.get_member_mapping(session, user_id, connection_id)


@router.put("/member-mappings/{user_id}", operation_id="set_member_mapping")
async def set_member_mapping(
    user_id: uuid.UUID, body: MemberMappingUpdate, principal: AdminDep, session: SessionDep
) -> MemberMappingOut:
    mapping = await psa.set_member_mapping(
        session, user_id=user_id, member_identifier=body.member_identifier, connection_id=body.connection_id
    )
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="psa_member_mapping.set",
                 resource_type="user", resource_id=user_id,
                 details={"member_identifier": body.member_identifier, "connection_id": str(mapping.connection_id)})
    await session.commit()
    return mapping


# --- pushes ---------------------------------------------------------------------------------


@router.get("/pushes", operation_id="list_psa_pushes")
async def list_psa_pushes(
    principal: EngineerDep,
    session: SessionDep,
    subject_id: uuid.UUID | None = None,
    subject_type: Annotated[str | None, Query(max_length=40)] = None,
    push_status: Annotated[PushStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[PushOut]:
    pushes = await psa.list_pushes(
        session, subject_id=subject_id, subject_type=subject_type, status=push_status, limit=limit
    )
    return [PushOut.model_validate(p) for p in pushes]


@router.get("/pushes/{push_id}", operation_id="get_psa_push")
async def get_psa_push(push_id: uuid.UUID, principal: EngineerDep, session: SessionDep) -> PushOut:
    return PushOut.model_validate(await psa.get_push(session, push_id))


@router.post("/pushes/{push_id}/retry", operation_id="retry_psa_push")
async def retry_psa_push(
    push_id: uuid.UUID, principal: EngineerDep, state: StateDep, session: SessionDep, http: HttpDep
) -> PushOut:
    push = await psa.retry_push(session, state.secrets, push_id, http_client=http)
    audit.record(session, account_id=principal.account_id, actor=principal.actor, action="psa_push.retry",
                 resource_type="psa_push", resource_id=push.id, details={"status": push.status.value})
    await session.commit()
    return PushOut.model_validate(push)
