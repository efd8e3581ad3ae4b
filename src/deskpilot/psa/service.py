"""PSA service: connections, ticket context and search, member mappings, and pushes with retry.

Functions take an account-scoped AsyncSession and do not commit: the caller owns the transaction.
Network calls happen before rows are written, so no write lock is held while a PSA is slow.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import DeskpilotError, ValidationFailed
from deskpilot.identity import service as identity
from deskpilot.psa import registry
from deskpilot.psa.base import Member, NoteResult, PSAProvider, TicketContext, TicketSummary, TimeEntryResult
from deskpilot.psa.errors import (
    NoPSAConnection,
    PSAConnectionInactive,
    PSAConnectionNameTaken,
    PSAConnectionNotFound,
    PSAPushAlreadyDone,
    PSAPushNotFound,
)
from deskpilot.psa.models import (
    ERROR_LENGTH,
    MappingSource,
    PsaConnection,
    PsaMemberMapping,
    PsaPush,
    PushKind,
    PushStatus,
)
from deskpilot.psa.registry import PSAKind
from deskpilot.psa.schemas import (
    AutoMapOut,
    ConnectionOut,
    ConnectionTestOut,
    MemberMappingOut,
    NoteFlags,
    PushResult,
    TicketContextLoad,
    TimeEntryDraft,
)
from deskpilot.security.crypto import SecretBox, SecretDecryptionError
from deskpilot.storage import utcnow

logger = logging.getLogger(__name__)

HOURS_STEP = Decimal("0.01")


def _short(error: BaseException) -> str:
    """An error message fit for `last_error` and the UI (FP-044: at most 200 characters)."""
    text = error.detail if isinstance(error, DeskpilotError) else f"{type(error).__name__}: {error}"
    return text[:ERROR_LENGTH]


# --- connections ----------------------------------------------------------------------------


async def _check_name_free(session: AsyncSession, name: str, *, except_id: uuid.UUID | None = None) -> None:
    stmt = select(PsaConnection.id).where(PsaConnection.name == name)
    if except_id is not None:
        stmt = stmt.where(PsaConnection.id != except_id)
    if await session.scalar(stmt) is not None:
        raise PSAConnectionNameTaken(f"a PSA connection named {name!r} already exists")


async def create_connection(
    session: AsyncSession,
    secrets: SecretBox,
    *,
    account_id: uuid.UUID,
    name: str,
    kind: PSAKind | str,
    settings: Mapping[str, object],
    credentials: Mapping[str, object],
) -> PsaConnection:
    """Add a connection; credentials are validated for `kind` and stored only encrypted."""
    spec = registry.spec(kind)
    clean_settings = registry.validate_settings(spec.kind, settings)
    clean_credentials = registry.validate_credentials(spec.kind, credentials)
    await _check_name_free(session, name)
    connection = PsaConnection(
        account_id=account_id,
        name=name,
        kind=spec.kind,
        settings=clean_settings,
        credentials_encrypted=secrets.encrypt_json(clean_credentials),
    )
    session.add(connection)
    await session.flush()
    logger.info("created PSA connection %s (%s)", connection.id, spec.kind.value)
    return connection


async def get_connection(session: AsyncSession, connection_id: uuid.UUID) -> PsaConnection:
    connection = await session.get(PsaConnection, connection_id)
    if connection is None:
        raise PSAConnectionNotFound(f"PSA connection {str(connection_id)!r} not found")
    return connection


async def list_connections(session: AsyncSession, *, include_inactive: bool = False) -> Sequence[PsaConnection]:
    stmt = select(PsaConnection).order_by(PsaConnection.name)
    if not include_inactive:
        stmt = stmt.where(PsaConnection.is_active.is_(True))
    return (await session.scalars(stmt)).all()


async def update_connection(
    session: AsyncSession,
    secrets: SecretBox,
    connection_id: uuid.UUID,
    *,
    name: str | None = None,
    settings: Mapping[str, object | None] | None = None,
    credentials: Mapping[str, str] | None = None,
    is_active: bool | None = None,
) -> PsaConnection:
    """Change a connection; settings keys merge (None removes one), and a secret changes only when given."""
    connection = await get_connection(session, connection_id)
    if name is not None and name != connection.name:
        await _check_name_free(session, name, except_id=connection.id)
        connection.name = name
    if settings:
        merged: dict[str, object] = dict(connection.settings)
        for key, value in settings.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        connection.settings = registry.validate_settings(connection.kind, merged)
    given = {k: v for k, v in (credentials or {}).items() if v}
    if given:
        current = secrets.decrypt_json(connection.credentials_encrypted)
        connection.credentials_encrypted = secrets.encrypt_json(
            registry.validate_credentials(connection.kind, {**current, **given})
        )
    if settings or given:
        # Old test results say nothing about the new configuration.
        connection.last_tested_at = None
        connection.last_test_ok = None
        connection.last_error = None
    if is_active is not None:
        connection.is_active = is_active
    await session.flush()
    return connection


async def delete_connection(session: AsyncSession, connection_id: uuid.UUID) -> PsaConnection:
    """Deactivate a connection: its pushes and mappings stay for the record, nothing is sent any more."""
    connection = await get_connection(session, connection_id)
    connection.is_active = False
    await session.flush()
    return connection


def connection_view(connection: PsaConnection, secrets: SecretBox) -> ConnectionOut:
    """The API view of a connection: settings, but only hints and presence flags for credentials."""
    try:
        stored = secrets.decrypt_json(connection.credentials_encrypted)
        credentials = registry.credential_view(connection.kind, {k: str(v) for k, v in stored.items()})
    except SecretDecryptionError:
        # One connection encrypted with a lost key must not break the whole listing: say so, ask for new keys.
        credentials = {"unreadable": True}
    return ConnectionOut(
        id=connection.id,
        name=connection.name,
        kind=connection.kind,
        settings={k: str(v) for k, v in connection.settings.items() if v is not None},
        credentials=credentials,
        is_active=connection.is_active,
        last_tested_at=connection.last_tested_at,
        last_test_ok=connection.last_test_ok,
        last_error=connection.last_error,
        created_at=connection.created_at,
        updated_at=connection.updated_at,
    )


def _build(connection: PsaConnection, secrets: SecretBox, http_client: httpx.AsyncClient | None) -> PSAProvider:
    credentials = secrets.decrypt_json(connection.credentials_encrypted)
    return registry.build_provider(connection.kind, connection.settings, credentials, http_client=http_client)


async def provider_for_connection(
    session: AsyncSession,
    secrets: SecretBox,
    connection_id: uuid.UUID,
    http_client: httpx.AsyncClient | None = None,
) -> PSAProvider:
    """The provider for an active connection; use it as `async with` (it closes a client it created)."""
    connection = await get_connection(session, connection_id)
    if not connection.is_active:
        raise PSAConnectionInactive(f"PSA connection {connection.name!r} is inactive")
    return _build(connection, secrets, http_client)


async def test_connection(
    session: AsyncSession,
    secrets: SecretBox,
    connection_id: uuid.UUID,
    *,
    http_client: httpx.AsyncClient | None = None,  # noqa: PT028 - a service function, not a pytest test
) -> ConnectionTestOut:
    """Ask the PSA whether the connection works and remember the answer on the connection."""
    connection = await get_connection(session, connection_id)
    if not connection.is_active:
        raise PSAConnectionInactive(f"PSA connection {connection.name!r} is inactive")
    detail: str | None = None
    error: str | None = None
    try:
        async with _build(connection, secrets, http_client) as provider:
            detail = (await provider.test()).detail
    except DeskpilotError as e:
        error = _short(e)
        logger.info("PSA connection %s test failed: %s", connection.id, e.code)
    connection.last_tested_at = utcnow()
    connection.last_test_ok = error is None
    connection.last_error = error
    await session.flush()
    return ConnectionTestOut(ok=error is None, detail=detail, error=error, tested_at=connection.last_tested_at)


# --- tickets --------------------------------------------------------------------------------


async def get_ticket_context(
    session: AsyncSession,
    secrets: SecretBox,
    connection_id: uuid.UUID,
    ticket_id: str,
    *,
    http_client: httpx.AsyncClient | None = None,
) -> TicketContext:
    """The ticket with company, contact and recent notes; raises PSAError subclasses."""
    async with await provider_for_connection(session, secrets, connection_id, http_client) as provider:
        return await provider.get_ticket_context(str(ticket_id))


async def load_ticket_context(
    session: AsyncSession,
    secrets: SecretBox,
    connection_id: uuid.UUID,
    ticket_id: str,
    *,
    http_client: httpx.AsyncClient | None = None,
) -> TicketContextLoad:
    """Ticket context for session intake (FP-014): `unavailable` with the reason instead of raising."""
    try:
        context = await get_ticket_context(session, secrets, connection_id, ticket_id, http_client=http_client)
    except DeskpilotError as e:
        logger.warning("ticket %r context unavailable from PSA connection %s: %s", ticket_id, connection_id, e.code)
        return TicketContextLoad(status="unavailable", error=_short(e))
    return TicketContextLoad(status="loaded", context=context)


async def search_tickets(
    session: AsyncSession,
    secrets: SecretBox,
    connection_id: uuid.UUID,
    query: str,
    *,
    company: str | None = None,
    open_only: bool = True,
    limit: int = 20,
    http_client: httpx.AsyncClient | None = None,
) -> list[TicketSummary]:
    async with await provider_for_connection(session, secrets, connection_id, http_client) as provider:
        return await provider.search_tickets(query, company=company, open_only=open_only, limit=limit)


# --- member mappings ------------------------------------------------------------------------


async def resolve_connection_id(session: AsyncSession, connection_id: uuid.UUID | None) -> uuid.UUID | None:
    """`connection_id` if it exists, else the account's only active connection (None when there is none)."""
    if connection_id is not None:
        return (await get_connection(session, connection_id)).id
    ids = (await session.scalars(select(PsaConnection.id).where(PsaConnection.is_active.is_(True)).limit(2))).all()
    if len(ids) > 1:
        raise ValidationFailed("the account has several PSA connections: name one with connection_id",
                               code="psa_connection_required")
    return ids[0] if ids else None


async def _require_connection_id(session: AsyncSession, connection_id: uuid.UUID | None) -> uuid.UUID:
    resolved = await resolve_connection_id(session, connection_id)
    if resolved is None:
        raise NoPSAConnection("the account has no active PSA connection")
    return resolved


async def _mappings(session: AsyncSession, connection_id: uuid.UUID) -> dict[uuid.UUID, PsaMemberMapping]:
    rows = await session.scalars(select(PsaMemberMapping).where(PsaMemberMapping.connection_id == connection_id))
    return {m.user_id: m for m in rows}


class _UserLike(Protocol):
    id: uuid.UUID
    name: str
    email: str
    is_active: bool


def _mapping_view(
    user: _UserLike, connection_id: uuid.UUID | None, mapping: PsaMemberMapping | None
) -> MemberMappingOut:
    return MemberMappingOut(
        user_id=user.id,
        user_name=user.name,
        user_email=user.email,
        user_active=user.is_active,
        connection_id=connection_id,
        member_identifier=mapping.member_identifier if mapping else None,
        source=mapping.source if mapping else None,
        updated_at=mapping.updated_at if mapping else None,
    )


async def list_member_mappings(session: AsyncSession, connection_id: uuid.UUID | None = None) -> list[MemberMappingOut]:
    """Every user of the account with their mapping on the connection, or null (FP-045)."""
    resolved = await resolve_connection_id(session, connection_id)
    mappings = await _mappings(session, resolved) if resolved is not None else {}
    return [_mapping_view(u, resolved, mappings.get(u.id)) for u in await identity.list_users(session)]


async def get_member_mapping(
    session: AsyncSession, user_id: uuid.UUID, connection_id: uuid.UUID | None = None
) -> MemberMappingOut:
    user = await identity.get_user(session, user_id)
    resolved = await resolve_connection_id(session, connection_id)
    mapping = (await _mappings(session, resolved)).get(user.id) if resolved is not None else None
    return _mapping_view(user, resolved, mapping)


async def set_member_mapping(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    member_identifier: str | None,
    connection_id: uuid.UUID | None = None,
) -> MemberMappingOut:
    """Map a user to a member by hand (auto-mapping never replaces it); None removes the mapping."""
    user = await identity.get_user(session, user_id)
    resolved = await _require_connection_id(session, connection_id)
    mapping = (await _mappings(session, resolved)).get(user.id)
    if member_identifier is None:
        if mapping is not None:
            await session.delete(mapping)
            mapping = None
    elif mapping is None:
        mapping = PsaMemberMapping(
            account_id=user.account_id, connection_id=resolved, user_id=user.id,
            member_identifier=member_identifier, source=MappingSource.MANUAL,
        )
        session.add(mapping)
    else:
        mapping.member_identifier = member_identifier
        mapping.source = MappingSource.MANUAL
    await session.flush()
    return _mapping_view(user, resolved, mapping)


async def auto_map_members(
    session: AsyncSession,
    secrets: SecretBox,
    *,
    connection_id: uuid.UUID | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AutoMapOut:
    """Match users to active PSA members by email (case-insensitive); manual mappings are left alone."""
    resolved = await _require_connection_id(session, connection_id)
    async with await provider_for_connection(session, secrets, resolved, http_client) as provider:
        members = await provider.list_members()
    by_email: dict[str, list[Member]] = {}
    for member in members:
        if member.email:
            by_email.setdefault(member.email.strip().lower(), []).append(member)
    existing = await _mappings(session, resolved)
    matched = manual_kept = removed = 0
    for user in await identity.list_users(session):
        current = existing.get(user.id)
        if current is not None and current.source is MappingSource.MANUAL:
            manual_kept += 1
            continue
        candidates = by_email.get(user.email.lower(), [])
        # Two members sharing one email cannot be told apart: leave it to a manual mapping.
        identifier = candidates[0].identifier if len(candidates) == 1 else None
        if identifier is None:
            if current is not None:
                await session.delete(current)
                removed += 1
            continue
        matched += 1
        if current is None:
            session.add(PsaMemberMapping(
                account_id=user.account_id, connection_id=resolved, user_id=user.id,
                member_identifier=identifier, source=MappingSource.AUTO,
            ))
        else:
            current.member_identifier = identifier
    await session.flush()
    return AutoMapOut(
        connection_id=resolved, members_found=len(members), matched=matched, manual_kept=manual_kept,
        removed=removed, mappings=await list_member_mappings(session, resolved),
    )


async def member_for_user(session: AsyncSession, connection_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The PSA member identifier of a user on a connection, or None when unmapped."""
    return await session.scalar(
        select(PsaMemberMapping.member_identifier).where(
            PsaMemberMapping.connection_id == connection_id, PsaMemberMapping.user_id == user_id
        )
    )


# --- pushes ---------------------------------------------------------------------------------


async def _deliver(provider: PSAProvider, push: PsaPush) -> None:
    """Send one push and record the outcome on the row; never raises."""
    push.attempts += 1
    payload = push.payload
    try:
        result: NoteResult | TimeEntryResult
        if push.kind is PushKind.NOTE:
            result = await provider.push_note(
                push.ticket_id, str(payload["text"]), internal=bool(payload["internal"]),
                resolution=bool(payload["resolution"]), detail=bool(payload["detail"]),
            )
        else:
            result = await provider.add_time_entry(
                push.ticket_id, str(payload["member_identifier"]), Decimal(str(payload["hours"])),
                str(payload["notes"]), datetime.fromisoformat(str(payload["started_at"])),
            )
    # Broad on purpose (FP-044): whatever goes wrong in a push must not fail the resolve or escalate around it.
    except Exception as e:
        if not isinstance(e, DeskpilotError):
            logger.exception("unexpected error pushing %s %s to ticket %r", push.kind.value, push.id, push.ticket_id)
        push.status = PushStatus.FAILED
        push.last_error = _short(e)
        logger.warning("PSA %s push %s to ticket %r failed: %s", push.kind.value, push.id, push.ticket_id,
                       push.last_error)
        return
    push.status = PushStatus.PUSHED
    push.external_id = result.external_id
    push.pushed_at = utcnow()
    push.last_error = None
    logger.info("PSA %s push %s to ticket %r done (external id %s)", push.kind.value, push.id, push.ticket_id,
                result.external_id)


async def _deliver_all(
    secrets: SecretBox,
    connection: PsaConnection,
    pushes: Sequence[PsaPush],
    http_client: httpx.AsyncClient | None,
) -> None:
    try:
        if not connection.is_active:
            raise PSAConnectionInactive(f"PSA connection {connection.name!r} is inactive")
        provider = _build(connection, secrets, http_client)
    except DeskpilotError as e:
        for push in pushes:
            push.attempts += 1
            push.status = PushStatus.FAILED
            push.last_error = _short(e)
        return
    async with provider:
        for push in pushes:
            await _deliver(provider, push)


async def record_and_push(
    session: AsyncSession,
    secrets: SecretBox,
    *,
    connection_id: uuid.UUID | None,
    ticket_id: str | None,
    subject_type: str,
    subject_id: uuid.UUID,
    note_text: str,
    flags: NoteFlags | None = None,
    time_entry: TimeEntryDraft | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> PushResult:
    """Push a note (and optionally a time entry) to a ticket and keep a retryable record of each.

    Never raises for PSA failures (FP-044): the result says `no_psa`, `failed` (with the error, ≤200
    characters) or `pushed`. A time entry for an engineer without a member mapping is skipped and
    `member_mapping_warning` says so.
    """
    if connection_id is None or not ticket_id:
        return PushResult(status="no_psa")
    try:
        connection = await get_connection(session, connection_id)
    except PSAConnectionNotFound as e:
        return PushResult(status="failed", error=_short(e))
    flags = flags or NoteFlags()

    def new_push(kind: PushKind, payload: dict[str, str | bool]) -> PsaPush:
        return PsaPush(
            account_id=connection.account_id, connection_id=connection.id, ticket_id=str(ticket_id),
            subject_type=subject_type, subject_id=subject_id, kind=kind, payload=payload,
            status=PushStatus.PENDING, attempts=0,
        )

    pushes = [new_push(PushKind.NOTE, {
        "text": note_text, "internal": flags.internal, "resolution": flags.resolution, "detail": flags.detail,
    })]
    warning: str | None = None
    if time_entry is not None:
        hours = max(time_entry.hours.quantize(HOURS_STEP, rounding=ROUND_HALF_UP), HOURS_STEP)
        member = await member_for_user(session, connection.id, time_entry.user_id)
        if member is None:
            warning = (f"no PSA member is mapped for this engineer on {connection.name!r}: "
                       f"the time entry of {hours} hours was not logged")
        else:
            pushes.append(new_push(PushKind.TIME_ENTRY, {
                "member_identifier": member, "hours": str(hours), "notes": time_entry.notes,
                "started_at": time_entry.started_at.isoformat(), "user_id": str(time_entry.user_id),
            }))
    await _deliver_all(secrets, connection, pushes, http_client)
    session.add_all(pushes)
    await session.flush()
    errors = [p.last_error for p in pushes if p.status is not PushStatus.PUSHED]
    return PushResult(
        status="failed" if errors else "pushed",
        error=errors[0] if errors else None,
        member_mapping_warning=warning,
        push_ids=[p.id for p in pushes],
    )


async def get_push(session: AsyncSession, push_id: uuid.UUID) -> PsaPush:
    push = await session.get(PsaPush, push_id)
    if push is None:
        raise PSAPushNotFound(f"PSA push {str(push_id)!r} not found")
    return push


async def list_pushes(
    session: AsyncSession,
    *,
    subject_id: uuid.UUID | None = None,
    subject_type: str | None = None,
    status: PushStatus | None = None,
    limit: int = 100,
) -> Sequence[PsaPush]:
    stmt = select(PsaPush).order_by(PsaPush.created_at.desc()).limit(limit)
    if subject_id is not None:
        stmt = stmt.where(PsaPush.subject_id == subject_id)
    if subject_type is not None:
        stmt = stmt.where(PsaPush.subject_type == subject_type)
    if status is not None:
        stmt = stmt.where(PsaPush.status == status)
    return (await session.scalars(stmt)).all()


async def retry_push(
    session: AsyncSession, secrets: SecretBox, push_id: uuid.UUID, *, http_client: httpx.AsyncClient | None = None
) -> PsaPush:
    """Send a failed (or stuck pending) push again with its stored payload; the row records the outcome."""
    push = await get_push(session, push_id)
    if push.status is PushStatus.PUSHED:
        raise PSAPushAlreadyDone(f"PSA push {str(push.id)!r} already went through")
    connection = await get_connection(session, push.connection_id)
    await _deliver_all(secrets, connection, [push], http_client)
    await session.flush()
    return push
