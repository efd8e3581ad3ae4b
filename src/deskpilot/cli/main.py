"""The `deskpilot` command: serve, migrate, demo, worker, admin and llm tools."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from deskpilot import __version__
from deskpilot.cli.chat import chat_command
from deskpilot.cli.knowledge import knowledge_app
from deskpilot.cli.pilot import pilot_command
from deskpilot.errors import DeskpilotError
from deskpilot.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

T = TypeVar("T")

app = typer.Typer(help="deskpilot: the AI operations desk for IT service teams.", no_args_is_help=True)
admin_app = typer.Typer(help="Accounts, users and API tokens.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
llm_app = typer.Typer(help="LLM provider tools.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(token_app, name="token")
app.add_typer(llm_app, name="llm")
app.add_typer(knowledge_app, name="knowledge")
app.command("pilot")(pilot_command)
app.command("chat")(chat_command)

console = Console()
err_console = Console(stderr=True)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as e:
        err_console.print(f"[red]configuration error:[/red] {e}")
        raise typer.Exit(2) from e


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except DeskpilotError as e:
        err_console.print(f"[red]{e.code}:[/red] {e.detail}")
        raise typer.Exit(1) from e


def _version(value: bool) -> None:
    if value:
        console.print(f"deskpilot {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """deskpilot command line."""


@app.command()
def migrate(revision: Annotated[str, typer.Option(help="Target revision.")] = "head") -> None:
    """Apply database migrations."""
    from deskpilot.storage import migrations

    settings = _settings()
    with console.status(f"migrating {_redact_url(settings.database.url)} to {revision}…"):
        migrations.upgrade(settings.database.url, revision)
    console.print(f"[green]database at revision {migrations.head_revision(settings.database.url)}[/green]")


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# How every server process runs uvicorn.
_SERVE_OPTIONS: Final[dict[str, Any]] = {
    "log_config": None,
    # deskpilot's own middleware logs each request with its request id.
    "access_log": False,
    "proxy_headers": True,
    # Open SSE streams would otherwise hold shutdown until every browser tab goes away.
    "timeout_graceful_shutdown": 5,
}


# Where prometheus_client's multiprocess mode keeps the workers' metrics (its documented variable).
METRICS_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def worker_app() -> FastAPI:
    """The app of one process of `deskpilot serve --workers N` (uvicorn imports it in each process)."""
    from deskpilot.api.app import create_app

    settings = _settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def _workers_refusal(settings: Settings) -> str | None:
    """Why several server processes would not work with these settings, if they would not."""
    if not settings.redis.url:
        return ("several server processes need DESKPILOT_REDIS__URL: live events (notifications, session updates) "
                "are published through Redis so that every process's streams see them")
    from deskpilot.storage.engine import in_memory_sqlite

    if in_memory_sqlite(settings.database.url):
        return "several server processes need a database they share: a file or PostgreSQL, not in-memory SQLite"
    return None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int, typer.Option(min=1, help=(
        "Server processes sharing the port. One Python process uses one core; more than one needs Redis "
        "(DESKPILOT_REDIS__URL) and a shared database."
    ))] = 1,
) -> None:
    """Run the API and web console."""
    import uvicorn

    settings = _settings()
    configure_logging(settings.log_level)
    bind_host, bind_port = host or settings.server.host, port or settings.server.port
    if workers == 1:
        from deskpilot.api.app import create_app

        uvicorn.run(create_app(settings), host=bind_host, port=bind_port, **_SERVE_OPTIONS)
        return
    refusal = _workers_refusal(settings)
    if refusal is not None:
        err_console.print(f"[red]configuration error:[/red] {refusal}")
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="deskpilot-metrics-") as metrics_dir:
        # prometheus_client's multiprocess mode: each worker keeps its metrics in files there and /metrics sums
        # them, so a scrape counts every worker's requests. The library reads this variable when a worker imports
        # it, so it is set before uvicorn starts them (they inherit the environment).
        os.environ[METRICS_DIR_ENV] = metrics_dir  # noqa: TID251 - prometheus_client's own switch, not a setting
        uvicorn.run(
            "deskpilot.cli.main:worker_app", factory=True, workers=workers, host=bind_host, port=bind_port,
            **_SERVE_OPTIONS,
        )


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the server afterwards.")] = True,
) -> None:
    """Migrate, load sample data and start the console on embedded defaults."""
    from deskpilot.cli.sample_data import load_sample_data
    from deskpilot.storage import Database, migrations

    settings = _settings()
    with console.status("applying migrations…"):
        migrations.upgrade(settings.database.url)

    async def _load() -> Any:
        db = Database(settings.database.url)
        try:
            return await load_sample_data(db)
        finally:
            await db.dispose()

    with console.status("loading sample data…"):
        login = _run(_load())
    url = f"http://{settings.server.host}:{port or settings.server.port}"
    console.rule("[bold]deskpilot demo[/bold]")
    console.print(f"Console: [link={url}]{url}[/link]")
    console.print(f"Sign in as [bold]{login.emails[1]}[/bold] (lead) or {', '.join(login.emails[2:])} (engineers)")
    console.print(f"Password for every demo user: [bold]{login.password}[/bold]  (owner: {login.emails[0]})")
    if login.api_token:
        console.print(f"Owner API token (shown once): [bold]{login.api_token}[/bold]")
    if not settings.llm_configured:
        console.print(
            "No LLM provider configured: Pilot sessions run in flow mode, driven by the starter runbooks. "
            "Set DESKPILOT_LLM__DEFAULT_MODEL (e.g. openai:gpt-4o-mini) and the provider's API key for AI mode."
        )
    console.rule()
    if serve_after:
        serve(host=None, port=port)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start a Celery worker (jobs backend 'celery', Redis broker)."""
    from deskpilot.worker import run_worker

    settings = _settings()
    configure_logging(settings.log_level)
    run_worker(settings, concurrency=concurrency, loglevel=loglevel)


# --- admin ----------------------------------------------------------------------------------


def _password(value: str | None, prompt: bool) -> str | None:
    if value is not None or not prompt:
        return value
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)  # type: ignore[no-any-return]


@admin_app.command("bootstrap")
def admin_bootstrap(
    account: Annotated[str, typer.Option(help="Account (company) name.")],
    email: Annotated[str, typer.Option(help="Owner's email.")],
    name: Annotated[str, typer.Option(help="Owner's name.")],
    password: Annotated[str | None, typer.Option(help="Owner's password (prompted when omitted).")] = None,
    no_password: Annotated[bool, typer.Option("--no-password", help="API token only, no console login.")] = False,
) -> None:
    """Create the first account, its owner and an API token."""
    from deskpilot.identity import service as identity
    from deskpilot.storage import Database

    settings = _settings()
    secret = _password(password, prompt=not no_password)

    async def _go() -> identity.Bootstrapped:
        db = Database(settings.database.url)
        try:
            async with db.system_session() as session:
                result = await identity.bootstrap(session, account_name=account, email=email, name=name,
                                                  password=secret)
                await session.commit()
                return result
        finally:
            await db.dispose()

    result = _run(_go())
    console.print(f"account [bold]{result.account.name}[/bold] ({result.account.id})")
    console.print(f"owner   {result.owner.email} ({result.owner.id})")
    console.print(f"API token (shown once, store it now): [bold]{result.token.secret}[/bold]")


@user_app.command("add")
def admin_user_add(
    account: Annotated[str, typer.Option(help="Account id or slug.")],
    email: Annotated[str, typer.Option(help="Email.")],
    name: Annotated[str, typer.Option(help="Full name.")],
    role: Annotated[str, typer.Option(help="viewer, engineer, lead, admin or owner.")] = "engineer",
    team: Annotated[str | None, typer.Option(help="Team name (created when missing).")] = None,
    password: Annotated[str | None, typer.Option(help="Password (prompted when omitted).")] = None,
    no_password: Annotated[bool, typer.Option("--no-password", help="No console login.")] = False,
) -> None:
    """Add a user to an account."""
    from sqlalchemy import select

    from deskpilot.identity import service as identity
    from deskpilot.identity.models import Role, Team
    from deskpilot.storage import Database

    try:
        user_role = Role(role)
    except ValueError as e:
        err_console.print(f"[red]unknown role {role!r}[/red]: choose one of {', '.join(r.value for r in Role)}")
        raise typer.Exit(2) from e
    settings = _settings()
    secret = _password(password, prompt=not no_password)

    async def _go() -> tuple[str, uuid.UUID]:
        db = Database(settings.database.url)
        try:
            account_id = await _resolve_account(db, account)
            async with db.session(account_id) as session:
                team_id = None
                if team:
                    found = await session.scalar(select(Team).where(Team.name == team))
                    found = found or await identity.create_team(session, account_id=account_id, name=team)
                    team_id = found.id
                user = await identity.create_user(session, account_id=account_id, email=email, name=name,
                                                  role=user_role, password=secret, team_id=team_id)
                await session.commit()
                return user.email, user.id
        finally:
            await db.dispose()

    user_email, user_id = _run(_go())
    console.print(f"user {user_email} ({user_id}) added as {user_role.value}")


async def _resolve_account(db: Any, ref: str) -> uuid.UUID:
    from sqlalchemy import or_, select

    from deskpilot.errors import NotFound
    from deskpilot.identity.models import Account

    async with db.unscoped_session() as session:
        try:
            condition = or_(Account.id == uuid.UUID(ref), Account.slug == ref)
        except ValueError:
            condition = Account.slug == ref
        account_id = await session.scalar(select(Account.id).where(condition))
    if account_id is None:
        raise NotFound(f"no account with id or slug {ref!r}")
    return account_id  # type: ignore[no-any-return]


@token_app.command("create")
def admin_token_create(
    email: Annotated[str, typer.Option(help="The user the token acts as.")],
    name: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
) -> None:
    """Create an API token for a user; the secret is shown once."""
    from sqlalchemy import select

    from deskpilot.errors import NotFound
    from deskpilot.identity import service as identity
    from deskpilot.identity.models import User
    from deskpilot.storage import Database

    settings = _settings()

    async def _go() -> identity.IssuedToken:
        db = Database(settings.database.url)
        try:
            async with db.system_session() as session:
                user = await session.scalar(select(User).where(User.email == identity.normalise_email(email)))
                if user is None:
                    raise NotFound(f"no user with email {email!r}")
                issued = await identity.create_api_token(session, user=user, name=name)
                await session.commit()
                return issued
        finally:
            await db.dispose()

    issued = _run(_go())
    console.print(f"token {issued.token.id} ({issued.token.prefix}…)")
    console.print(f"secret (shown once): [bold]{issued.secret}[/bold]")


@token_app.command("revoke")
def admin_token_revoke(token_id: Annotated[str, typer.Argument(help="Token id.")]) -> None:
    """Revoke an API token."""
    from deskpilot.errors import ValidationFailed
    from deskpilot.events.pubsub import make_pubsub
    from deskpilot.identity import service as identity
    from deskpilot.identity.errors import TokenNotFound
    from deskpilot.identity.models import ApiToken
    from deskpilot.storage import Database

    settings = _settings()

    async def _go() -> None:
        try:
            tid = uuid.UUID(token_id)
        except ValueError as e:
            raise ValidationFailed(f"{token_id!r} is not a token id") from e
        db = Database(settings.database.url)
        try:
            async with db.system_session() as session:
                token = await session.get(ApiToken, tid)
                if token is None:
                    raise TokenNotFound(f"API token {token_id!r} not found")
            async with db.session(token.account_id) as session:
                await identity.revoke_api_token(session, tid)
                await session.commit()
            if settings.redis.url:
                # Running servers drop their cached authentication of it now, not when it expires.
                pubsub = make_pubsub(settings)
                try:
                    await identity.announce_invalidation(pubsub, token_id=tid)
                finally:
                    await pubsub.close()
        finally:
            await db.dispose()

    _run(_go())
    console.print(f"token {token_id} revoked")


@token_app.command("list")
def admin_token_list(account: Annotated[str, typer.Option(help="Account id or slug.")]) -> None:
    """List an account's API tokens."""
    from deskpilot.identity import service as identity
    from deskpilot.storage import Database

    settings = _settings()

    async def _go() -> list[Any]:
        db = Database(settings.database.url)
        try:
            account_id = await _resolve_account(db, account)
            async with db.session(account_id) as session:
                return list(await identity.list_api_tokens(session))
        finally:
            await db.dispose()

    table = Table("id", "name", "prefix", "created", "last used", "revoked")
    for t in _run(_go()):
        table.add_row(str(t.id), t.name, t.prefix, f"{t.created_at:%Y-%m-%d %H:%M}",
                      f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
                      f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "-")
    console.print(table)


# --- llm ------------------------------------------------------------------------------------


@llm_app.command("check")
def llm_check(purpose: Annotated[str, typer.Option(help="Route to check.")] = "quick") -> None:
    """Tell whether the configured provider answers and can produce structured output."""
    from deskpilot.llm.check import check_provider

    settings = _settings()
    with console.status(f"asking the {purpose!r} route…"):
        report = asyncio.run(check_provider(settings.llm, purpose=purpose))
    for line in report.lines:
        console.print(line)
    raise typer.Exit(0 if report.ok else 1)
