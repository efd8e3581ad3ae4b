"""Alembic environment: runs migrations over deskpilot's async engine."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from deskpilot.all_models import Base, autogenerate_include_name
from deskpilot.settings import Settings
from deskpilot.storage.base import JSONDocument, UTCDateTime
from deskpilot.storage.engine import make_engine

config = context.config


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Our timezone-aware TypeDecorator is a plain timestamptz in the schema.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, JSONDocument):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
        # The full-text search structures (migrations 0002 and 0003) have no model; autogenerate must not drop them.
        include_name=autogenerate_include_name,
        compare_type=True,
        compare_server_default=True,
    )


def _do_run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _do_run(connection)
        return
    url = config.attributes.get("database_url") or Settings().database.url
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run `deskpilot migrate` against a database")
run()
