"""`deskpilot knowledge`: import, export and list runbook flows; list script templates; load the starter library."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.errors import DeskpilotError, NotFound
from deskpilot.identity.models import Account
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge import yaml_io
from deskpilot.knowledge.models import FlowStatus
from deskpilot.settings import Settings
from deskpilot.storage import Database

T = TypeVar("T")

knowledge_app = typer.Typer(help="Runbook flows, script templates and the starter library.", no_args_is_help=True)
flows_app = typer.Typer(help="Runbook flows.", no_args_is_help=True)
templates_app = typer.Typer(help="Script templates.", no_args_is_help=True)
knowledge_app.add_typer(flows_app, name="flows")
knowledge_app.add_typer(templates_app, name="templates")

console = Console()
err_console = Console(stderr=True)

AccountOption = Annotated[str, typer.Option("--account", help="Account id or slug.")]


def _database_url() -> str:
    try:
        return Settings().database.url
    except ValueError as e:
        err_console.print(f"[red]configuration error:[/red] {e}")
        raise typer.Exit(2) from e


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except DeskpilotError as e:
        err_console.print(f"[red]{e.code}:[/red] {e.detail}", markup=True, highlight=False)
        for item in e.extra.get("errors", [])[:20]:
            where = f"document {item['document']}: " if "document" in item else ""
            err_console.print(f"  {where}{item.get('field') or '(document)'}: {item['message']}",
                              markup=False, highlight=False)
        raise typer.Exit(1) from e


async def _account_id(db: Database, ref: str) -> uuid.UUID:
    async with db.unscoped_session() as session:
        condition = Account.slug == ref
        with contextlib.suppress(ValueError):  # not an id: look the account up by slug only
            condition = or_(Account.id == uuid.UUID(ref), condition)
        account_id = await session.scalar(select(Account.id).where(condition))
    if account_id is None:
        raise NotFound(f"no account with id or slug {ref!r}")
    return account_id


async def _in_account(url: str, ref: str, work: Callable[[AsyncSession, uuid.UUID], Awaitable[T]]) -> T:
    """Run `work` in a session of the account named `ref`, and commit what it did."""
    db = Database(url)
    try:
        account_id = await _account_id(db, ref)
        async with db.session(account_id) as session:
            result = await work(session, account_id)
            await session.commit()
            return result
    finally:
        await db.dispose()


@flows_app.command("import")
def flows_import(
    path: Annotated[Path, typer.Argument(help="YAML file: one flow per document.", exists=True, dir_okay=False)],
    account: AccountOption,
    replace: Annotated[bool, typer.Option(help="Update flows whose slug already exists.")] = False,
    approve: Annotated[bool, typer.Option(help="Import new flows as approved instead of draft.")] = False,
) -> None:
    """Import flows from a YAML file; nothing is imported when any document is invalid."""
    text = path.read_bytes()

    async def work(session: AsyncSession, account_id: uuid.UUID) -> list[Any]:
        return await knowledge.import_flows_yaml(
            session, account_id=account_id, text=text, replace=replace,
            status=FlowStatus.APPROVED if approve else FlowStatus.DRAFT,
        )

    for item in _run(_in_account(_database_url(), account, work)):
        console.print(f"{item.action:9} {item.slug} (version {item.version}, {item.id})", highlight=False)


@flows_app.command("export")
def flows_export(
    account: AccountOption,
    slug: Annotated[list[str] | None, typer.Option(help="Only these flows (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Export flows as a multi-document YAML stream that `flows import` reads back."""

    async def work(session: AsyncSession, account_id: uuid.UUID) -> str:
        flows = await knowledge.list_flows(session)
        wanted = [f for f in flows if not slug or f.slug in slug]
        missing = sorted(set(slug or ()) - {f.slug for f in wanted})
        if missing:
            raise NotFound(f"no flow with slug {', '.join(map(repr, missing))}")
        return yaml_io.flows_to_yaml([knowledge.flow_document(f) for f in wanted])

    text = _run(_in_account(_database_url(), account, work))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {output}")


@flows_app.command("list")
def flows_list(
    account: AccountOption,
    status: Annotated[FlowStatus | None, typer.Option(help="Only flows in this status.")] = None,
) -> None:
    """List flows with their status, version and success rate."""

    async def work(session: AsyncSession, _account_id: uuid.UUID) -> list[Any]:
        return list(await knowledge.list_flows(session, status=status))

    table = Table(Column("slug", no_wrap=True), "name", "domain", "status", "version", "matched", "success")
    for f in _run(_in_account(_database_url(), account, work)):
        table.add_row(f.slug, f.name, f.problem_domain.value, f.status.value, str(f.version), str(f.matched_count),
                      "-" if f.success_rate is None else f"{f.success_rate:.0%}")
    console.print(table)


@templates_app.command("list")
def templates_list(account: AccountOption) -> None:
    """List script templates with their language, parameters and use count."""

    async def work(session: AsyncSession, _account_id: uuid.UUID) -> list[Any]:
        return list(await knowledge.list_templates(session))

    table = Table(Column("slug", no_wrap=True), "name", "language", "parameters", "uses", "active")
    for t in _run(_in_account(_database_url(), account, work)):
        table.add_row(t.slug, t.name, t.language.value, ", ".join(p["name"] for p in t.parameters) or "-",
                      str(t.usage_count), "yes" if t.is_active else "no")
    console.print(table)


@knowledge_app.command("load-starter")
def load_starter(account: AccountOption) -> None:
    """Add the starter flows and script templates to an account (those already there are kept)."""
    result = _run(_in_account(_database_url(), account, knowledge.load_starter_library))
    console.print(f"added {result.flows_created} flow(s) and {result.templates_created} script template(s)")
