"""Tenant scoping: every ORM statement on a tenant-owned table is filtered by the session's account."""

from __future__ import annotations

import uuid
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from deskpilot.errors import DeskpilotError
from deskpilot.storage.base import TenantMixin


class _AllAccounts:
    def __repr__(self) -> str:
        return "ALL_ACCOUNTS"


ALL_ACCOUNTS: Final = _AllAccounts()
SCOPE_KEY: Final = "account_scope"


class UnscopedQueryError(DeskpilotError):
    """A tenant-owned table was queried from a session that names no account."""

    code = "unscoped_query"


def _touches_tenant_table(state: ORMExecuteState) -> bool:
    mappers = state.all_mappers if state.is_select else ([state.bind_mapper] if state.bind_mapper else [])
    return any(m is not None and issubclass(m.class_, TenantMixin) for m in mappers)


@event.listens_for(Session, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    scope: Any = state.session.info.get(SCOPE_KEY)
    # An explicit, greppable escape hatch for cross-account existence checks (unique emails).
    if scope is ALL_ACCOUNTS or state.execution_options.get("skip_tenant_scope"):
        return
    if scope is None:
        if _touches_tenant_table(state):
            raise UnscopedQueryError("query on a tenant-owned table from a session without an account scope")
        return
    account_id: uuid.UUID = scope
    state.statement = state.statement.options(
        with_loader_criteria(TenantMixin, lambda cls: cls.account_id == account_id, include_aliases=True)
    )


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _ctx: Any, _instances: Any) -> None:
    scope: Any = session.info.get(SCOPE_KEY)
    for obj in session.new:
        if not isinstance(obj, TenantMixin):
            continue
        current = getattr(obj, "account_id", None)
        if scope is None:
            raise UnscopedQueryError(f"cannot write {type(obj).__name__} from a session without an account scope")
        if scope is ALL_ACCOUNTS:
            if current is None:
                raise UnscopedQueryError(f"{type(obj).__name__} written from a system session needs an account_id")
            continue
        if current is None:
            obj.account_id = scope
        elif current != scope:
            raise UnscopedQueryError(f"{type(obj).__name__} belongs to another account than this session's scope")
    for obj in session.dirty:
        if isinstance(obj, TenantMixin) and scope is not None and scope is not ALL_ACCOUNTS and obj.account_id != scope:
            raise UnscopedQueryError(f"{type(obj).__name__} cannot be moved to another account")
