"""`deskpilot pilot`: a guided troubleshooting session in the terminal, answered at the prompt or from a script."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeAlias, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from deskpilot.errors import Conflict, DeskpilotError, NotConfigured, NotFound, PermissionDenied, ValidationFailed
from deskpilot.identity import service as identity
from deskpilot.identity.models import Account, Role, User
from deskpilot.knowledge import service as knowledge
from deskpilot.pilot.access import Caller
from deskpilot.pilot.documentation import SessionDocumentation, render_markdown
from deskpilot.pilot.errors import InvalidResponse, NoLLMNoFlow, StepGenerationFailed, UnknownOption
from deskpilot.pilot.schemas import (
    ActionResultIn,
    EscalateRequest,
    ResolveRequest,
    SessionCreate,
    StepOut,
    StepResponse,
    TurnResult,
)
from deskpilot.settings import Settings
from deskpilot.storage import Database

if TYPE_CHECKING:
    from deskpilot.jobs import JobBackend
    from deskpilot.llm import LLM
    from deskpilot.pilot.engine import PilotDeps

# pilot.service pulls in the LLM provider SDKs (about 2 s): it is imported when the command runs, not whenever
# `deskpilot` starts.

__all__ = ["Accept", "Escalate", "Pause", "Respond", "parse_answer", "pilot_command", "split_answers"]

T = TypeVar("T")

EXIT_RESOLVED: Final = 0
EXIT_ERROR: Final = 1
EXIT_OPEN: Final = 3

console = Console()
err_console = Console(stderr=True)

_YES: Final = frozenset({"y", "yes"})
_NO: Final = frozenset({"n", "no"})
_SKIP: Final = frozenset({"s", "skip"})
_PAUSE: Final = frozenset({"q", "quit", "pause"})
_ESCALATE: Final = frozenset({"e", "escalate"})
# The first word ends at a space or punctuation, not at a hyphen: "e-mail bounces" is not "e" (escalate).
_FIRST_WORD = re.compile(r"^(\S+?)(?:[\s:,;.!]+(.*))?$", re.DOTALL)
_ANSWER_SPLIT = re.compile(r"(?<!\\);")
_ACTION_TITLES: Final[Mapping[str, str]] = {
    "instruction": "Action",
    "script_generation": "Action · run a script",
    "verification": "Action · verify",
    "info_request": "Action · gather information",
    "open_script_builder": "Action · write a script",
}
_LEXERS: Final[Mapping[str, str]] = {"powershell": "powershell", "bash": "bash", "python": "python"}


# --- answers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Respond:
    """Submit this response to the current step."""

    response: StepResponse


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the resolution suggestion; `details` says what was done."""

    details: str | None


@dataclass(frozen=True, slots=True)
class Escalate:
    """Hand the session to the team with this reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    """Pause the session and leave."""


Decision: TypeAlias = Respond | Accept | Escalate | Pause


def split_answers(text: str) -> list[str]:
    """`--answers` as a list: separated by `;` (a literal one is written `\\;`), empty answers dropped."""
    parts = (p.replace("\\;", ";").strip() for p in _ANSWER_SPLIT.split(text))
    return [p for p in parts if p]


def read_answers_file(path: Path) -> list[str]:
    """One answer a line; blank lines and lines starting with `#` are left out."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _head(text: str) -> tuple[str, str]:
    """The first word, case-folded, and the rest with its separator (`y: it worked`, `n - still prompts`)."""
    match = _FIRST_WORD.match(text)
    if match is None:
        return "", text
    return match.group(1).casefold(), (match.group(2) or "").lstrip("-–— ").strip()


def _hint(step: StepOut) -> str:
    """How to answer this step, one line."""
    kind = step.content.get("type")
    tail = "e <reason> escalate to the team · q pause and quit"
    if kind == "resolution_suggestion":
        return f"y [what you did] accept and resolve · n [details] it did not fix it · {tail}"
    parts: list[str] = []
    if kind == "action":
        parts.append("y [details] it worked · n [details] it did not")
        if _free_text_allowed(step):
            parts.append("or type what you found")
    elif step.options:
        parts.append(f"1-{len(step.options)} or the option's value")
        if _free_text_allowed(step):
            parts.append("or type your own answer")
    elif _free_text_allowed(step):
        parts.append("type your answer")
    if step.allow_skip:
        parts.append("s skip")
    return " · ".join([*parts, tail])


def _free_text_allowed(step: StepOut) -> bool:
    # Runbook steps follow only their options and worked / did-not-work edges.
    return step.allow_free_text and "flow_node_id" not in step.content


def _response(step: StepOut, **fields: Any) -> Respond:
    try:
        return Respond(StepResponse(step_id=step.step_id, **fields))
    except ValidationError as e:
        problem = e.errors(include_url=False)[0]
        raise InvalidResponse(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}") from None


def _option_value(step: StepOut, text: str) -> str | None:
    """The value of the option `text` names by number, value or label; None when it names none."""
    options = [o for o in step.options if isinstance(o.get("value"), str)]
    if text.isdigit():
        number = int(text)
        if 1 <= number <= len(options):
            return str(options[number - 1]["value"])
        raise UnknownOption(
            f"There is no option {number}: choose 1-{len(options)}" if options else "This step offers no options",
            extra={"options": [o["value"] for o in options]},
        )
    folded = text.casefold()
    for option in options:
        if folded in (str(option["value"]).casefold(), str(option.get("label", "")).casefold()):
            return str(option["value"])
    return None


def parse_answer(step: StepOut, raw: str) -> Decision:
    """What the engineer's answer means for `step` (the same syntax at the prompt and in `--answers`).

    Raises `UnknownOption` / `InvalidResponse` for an answer the step cannot take; nothing is sent then.
    """
    text = raw.strip()
    if not text:
        raise InvalidResponse("Empty answer: " + _hint(step), code="empty_answer")
    word, rest = _head(text)
    if word in _PAUSE and not rest:
        return Pause()
    kind = step.content.get("type")
    if word in _ESCALATE and (rest or kind == "resolution_suggestion"):
        return Escalate(rest or str(step.content.get("text", "")).strip() or "Escalated from the terminal")
    if word in _ESCALATE and kind != "fork" and _option_value(step, text) is None:
        raise InvalidResponse("Say why you escalate: e <reason>", code="escalation_reason_required")
    if word in _SKIP and not rest:
        if not step.allow_skip:
            raise InvalidResponse("This step cannot be skipped: " + _hint(step), code="skip_not_allowed")
        return _response(step, was_skipped=True)
    if kind == "resolution_suggestion":
        if word in _YES:
            return Accept(rest or None)
        if word in _NO:
            return _response(step, action_result=ActionResultIn(success=False, details=rest or None))
        raise InvalidResponse("Accept the suggested resolution or not: " + _hint(step), code="invalid_answer")
    if kind == "action":
        if word in _YES | _NO:
            return _response(step, action_result=ActionResultIn(success=word in _YES, details=rest or None))
        if _free_text_allowed(step):
            return _response(step, free_text_input=text)
        raise InvalidResponse("Say whether the action worked: " + _hint(step), code="action_result_required")
    value = _option_value(step, text)
    if value is not None:
        return _response(step, selected_option=value)
    if _free_text_allowed(step) and kind != "fork":
        return _response(step, free_text_input=text)
    labels = ", ".join(f"{n}. {o.get('label', o.get('value'))}" for n, o in enumerate(step.options, start=1))
    raise UnknownOption(
        f"{text!r} is not one of this step's options ({labels})",
        extra={"options": [o.get("value") for o in step.options]},
    )


class Answers:
    """Where answers come from: the scripted list (`--answers`), else the terminal."""

    def __init__(self, scripted: Sequence[str] | None) -> None:
        self.interactive = scripted is None
        self._queue = list(scripted or ())

    def next(self) -> str | None:
        """The next answer; None when the script is used up, or the terminal is closed or interrupted."""
        if not self.interactive:
            if not self._queue:
                return None
            answer = self._queue.pop(0)
            console.print(Text.assemble(("› ", "bold cyan"), answer))
            return answer
        try:
            answer = console.input("[bold cyan]›[/bold cyan] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return None
        if not sys.stdin.isatty():
            # Piped answers are not echoed by a terminal: show them so the transcript reads as a dialogue.
            console.print(Text(answer), highlight=False)
        return answer


# --- rendering ------------------------------------------------------------------------------


def _step_title(step: StepOut) -> str:
    kind = step.content.get("type")
    if kind == "action":
        return _ACTION_TITLES.get(str(step.content.get("action_type")), "Action")
    return {"question": "Question", "resolution_suggestion": "Suggested resolution", "fork": "Fork"}.get(
        str(kind), str(kind).replace("_", " ").capitalize()
    )


def _clip_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _labelled(label: str, value: str, style: str = "") -> Text:
    return Text.assemble((f"{label}: ", "bold"), (value, style))


def render_step(step: StepOut, script: RenderableType | None = None) -> Panel:
    """One step as a panel: text, why, options / expected outcome / script / resolution, and how to answer."""
    content = step.content
    parts: list[RenderableType] = [Text(str(content.get("text", "")).strip(), style="bold")]
    if step.context_message:
        parts.append(Text(step.context_message.strip(), style="italic dim"))
    kind = content.get("type")
    if kind == "question" and step.options:
        parts.append(Text("\n".join(f"  {n}. {o.get('label', o.get('value'))}"
                                    for n, o in enumerate(step.options, start=1))))
    elif kind == "fork":
        if content.get("fork_reason"):
            parts.append(_labelled("Why it splits", str(content["fork_reason"])))
        lines = [Text.assemble(f"  {n}. ", (str(o.get("label", "")), "bold"),
                               f" — {o['description']}" if o.get("description") else "")
                 for n, o in enumerate(step.options, start=1)]
        parts.append(Text("\n").join(lines))
    elif kind == "action":
        if content.get("instructions"):
            parts.append(Text(str(content["instructions"]).strip()))
        if content.get("expected_outcome"):
            parts.append(_labelled("Expected outcome", str(content["expected_outcome"]), "green"))
        if content.get("script_prompt"):
            language = str(content.get("script_language") or "script")
            parts.append(_labelled(f"Script to write ({language})", str(content["script_prompt"])))
        if script is not None:
            parts.append(script)
    elif kind == "resolution_suggestion":
        summary = str(content.get("resolution_summary", "")).strip()
        if summary and summary != str(content.get("text", "")).strip():
            parts.append(_labelled("Resolution", summary, "green"))
        follow_ups = [str(f) for f in content.get("follow_up_recommendations") or []]
        if follow_ups:
            parts.append(Text("Follow-up:\n" + "\n".join(f"  • {f}" for f in follow_ups)))
    parts.append(Text(_hint(step), style="dim"))
    return Panel(
        Group(*_spaced(parts)),
        title=f"Step {step.step_order + 1} · {_step_title(step)}",
        title_align="left",
        subtitle=f"{step.confidence_tier} · confidence {step.confidence_score:.2f}",
        subtitle_align="right",
        border_style="cyan",
    )


def _spaced(parts: Sequence[RenderableType]) -> Iterator[RenderableType]:
    for index, part in enumerate(parts):
        if index:
            yield Text("")
        yield part


def _params_table(params: Mapping[str, Any]) -> Table:
    table = Table("parameter", "value", box=None, pad_edge=False, show_header=True, header_style="bold")
    for name, value in params.items():
        table.add_row(name, str(value))
    return table


def print_documentation(doc: SessionDocumentation) -> None:
    console.print()
    console.print(Panel(Markdown(render_markdown(doc)), title="Documentation", title_align="left",
                        border_style="green"))


def print_error(error: DeskpilotError) -> None:
    err_console.print(Text.assemble((f"{error.code}: ", "bold red"), error.detail), soft_wrap=True)


# --- setup ----------------------------------------------------------------------------------


async def check_database(db: Database) -> None:
    """Refuse a database that is missing or not migrated to head, with the command that fixes it."""
    from deskpilot.storage import migrations

    url = make_url(db.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(str(url.database))
        if not await asyncio.to_thread(path.exists):
            raise NotConfigured(
                f"No database at {path}: run `deskpilot demo --no-serve` (sample data) or `deskpilot migrate`",
                code="database_missing",
            )
    try:
        async with db.engine.connect() as connection:
            current = await migrations.current_revision(connection)
    except (OSError, SQLAlchemyError) as e:
        where = url.render_as_string(hide_password=True)
        raise NotConfigured(f"Cannot open the database {where}: {e}", code="database_unavailable") from e
    head = migrations.head_revision(db.url)
    if current != head:
        state = "is not migrated" if current is None else f"is at revision {current}, not {head}"
        raise NotConfigured(
            f"The database {state}: run `deskpilot migrate` (or `deskpilot demo --no-serve` for sample data)",
            code="database_not_migrated",
        )


_ROLE_PREFERENCE: Final = (Role.LEAD, Role.ADMIN, Role.OWNER)


async def resolve_user(db: Database, email: str | None) -> tuple[User, Account]:
    """The user named by `--as`, else the first lead (then admin, then owner) of the only account."""
    async with db.system_session() as session:
        if email is not None:
            user = await session.scalar(select(User).where(User.email == identity.normalise_email(email)))
            if user is None:
                raise NotFound(f"No user with email {email!r}", code="user_not_found")
        else:
            accounts = (await session.scalars(select(Account).order_by(Account.created_at).limit(2))).all()
            if not accounts:
                raise NotFound(
                    "The database has no account yet: run `deskpilot demo --no-serve` or `deskpilot admin bootstrap`",
                    code="account_not_found",
                )
            if len(accounts) > 1:
                raise ValidationFailed(
                    "The database holds several accounts: say who you are with --as EMAIL", code="user_ambiguous"
                )
            candidates = (await session.scalars(
                select(User).where(User.account_id == accounts[0].id, User.is_active,
                                   User.role.in_(_ROLE_PREFERENCE)).order_by(User.created_at)
            )).all()
            if not candidates:
                raise NotFound(
                    f"Account {accounts[0].name!r} has no active lead or owner: say who you are with --as EMAIL",
                    code="user_not_found",
                )
            user = min(candidates, key=lambda u: _ROLE_PREFERENCE.index(Role(u.role)))
        if not user.is_active:
            raise PermissionDenied(f"User {user.email} is deactivated", code="user_inactive")
        if not Role(user.role).at_least(Role.ENGINEER):
            raise PermissionDenied(
                f"User {user.email} is a {Role(user.role).value}; guided sessions need the engineer role or higher",
                code="role_required",
            )
        account = await session.get(Account, user.account_id)
        assert account is not None
        return user, account


async def resolve_client(db: Database, account_id: uuid.UUID, name: str) -> tuple[uuid.UUID, str]:
    """The id and exact name of the account's client called `name` (case does not matter)."""
    async with db.session(account_id) as session:
        clients = await identity.list_clients(session)
    for client in clients:
        if client.name.casefold() == name.strip().casefold():
            return client.id, client.name
    known = ", ".join(c.name for c in clients) or "none yet"
    raise NotFound(f"No client named {name!r} (clients: {known})", code="client_not_found")


# --- the session ----------------------------------------------------------------------------


class Interrupted(Exception):
    """Carries the exit code out of the session loop."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class PilotRun:
    """One terminal session: the database, the Pilot's collaborators, who acts, and where answers come from."""

    settings: Settings
    db: Database
    deps: PilotDeps
    caller: Caller
    answers: Answers
    resolve: bool
    session_id: uuid.UUID | None = None
    mode: str | None = None

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A service call in its own account-scoped database session, as one API request would make it."""
        async with self.db.session(self.caller.account_id) as session:
            return await fn(session, *args)

    async def thinking(self, label: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        with console.status(label, spinner="dots"):
            return await self.call(fn, *args)

    @property
    def console_url(self) -> str:
        return f"{self.settings.server.public_url.rstrip('/')}/pilot/{self.session_id}"

    # -- start -------------------------------------------------------------------------------

    async def start(self, request: SessionCreate) -> StepOut:
        from deskpilot.pilot import service

        label = "Classifying the problem and preparing the first step…"
        try:
            started = await self.thinking(label, service.start_session, self.deps, self.caller, request)
        except (NoLLMNoFlow, StepGenerationFailed) as e:
            session_id = e.extra.get("session_id")
            if isinstance(session_id, str):
                self.session_id = uuid.UUID(session_id)
            raise
        self.session_id = started.session_id
        self.mode = started.mode
        console.print(_labelled("Session", str(started.session_id)))
        summary = started.problem_summary or "(no summary)"
        facts = " · ".join(v for v in (started.problem_domain, started.urgency and f"{started.urgency} urgency") if v)
        console.print(_labelled("Problem", summary + (f" ({facts})" if facts else "")))
        console.print(self._mode_line(started.mode))
        if started.matched_flow_name is not None and started.match_score is not None:
            console.print(_labelled("Matched flow", f"{started.matched_flow_name} (score {started.match_score:.2f})"))
        else:
            console.print(_labelled("Matched flow", "none"))
        for alike in started.similar_sessions:
            # FP-021: resolved sessions of the account that look alike, best first.
            when = f", resolved {alike.resolved_at:%Y-%m-%d}" if alike.resolved_at is not None else ""
            fix = f" → {_clip_line(alike.resolution_summary, 100)}" if alike.resolution_summary else ""
            console.print(_labelled("Similar session", f"{alike.problem_summary or '(no summary)'}{fix} "
                                    f"(score {alike.score:.2f}{when}; {alike.id})"))
        return started.first_step

    def _mode_line(self, mode: str) -> Text:
        if mode == "flow":
            why = ("the model did not answer" if self.deps.llm.configured else "no LLM is configured")
            return _labelled("Mode", f"flow — {why}; the matched runbook drives the session", "yellow")
        route = ", ".join(self.deps.llm.route("pilot_step"))
        return _labelled("Mode", f"AI — {route}", "green")

    # -- turns -------------------------------------------------------------------------------

    async def script_for(self, step: StepOut) -> RenderableType | None:
        """The script of a script_generation step, rendered with its pre-filled parameters when they suffice."""
        content = step.content
        template_ref = content.get("template_id")
        if content.get("type") != "action" or not isinstance(template_ref, str):
            return None
        params = content.get("pre_filled_params") or {}
        try:
            template_id = uuid.UUID(template_ref)
        except ValueError:
            template_id = None
        if template_id is not None:
            try:
                rendered = await self.call(knowledge.render_template, template_id, params)
                template = await self.call(knowledge.get_template, template_id)
            except DeskpilotError as e:
                note = Text(f"Script template {template_ref} cannot be rendered here ({e.code}): {e.detail}",
                            style="yellow")
            else:
                language = str(rendered.language)
                syntax = Syntax(rendered.script.rstrip(), _LEXERS.get(language, "text"), word_wrap=True,
                                background_color="default")
                parts: list[RenderableType] = [_labelled("Script", f"{template.name} ({template.slug})")]
                if rendered.params:
                    parts.append(_params_table(rendered.params))
                parts.append(Panel(syntax, title=language, title_align="left", border_style="dim"))
                return Group(*parts)
        else:
            note = Text(f"Script template {template_ref} (open it in the console to fill its parameters)")
        return Group(note, _params_table(params)) if params else note

    async def show(self, step: StepOut) -> None:
        console.print()
        console.print(render_step(step, await self.script_for(step)))

    async def loop(self, step: StepOut) -> int:
        """Ask, answer and move on until a suggestion is accepted, the session is paused or escalated."""
        await self.show(step)
        while True:
            decision = self.decide(step)
            match decision:
                case Pause():
                    return await self.pause()
                case Accept(details=details):
                    return await self.accept(step, details)
                case Escalate(reason=reason):
                    return await self.escalate(reason)
                case Respond(response=response):
                    turn = await self.respond(response)
                    if turn is None:
                        continue
                    if turn.mode != self.mode:
                        self.mode = turn.mode
                        console.print(self._mode_line(turn.mode))
                    step = turn.next_step
                    await self.show(step)

    def decide(self, step: StepOut) -> Decision:
        """The next answer, asked again at the terminal until it fits the step; a scripted misfit is an error."""
        while True:
            raw = self.answers.next()
            if raw is None:
                if not self.answers.interactive:
                    console.print("[yellow]No answers left.[/yellow]")
                return Pause()
            try:
                return parse_answer(step, raw)
            except ValidationFailed as e:
                if not self.answers.interactive:
                    raise
                print_error(e)

    async def respond(self, response: StepResponse) -> TurnResult | None:
        """Send the answer and get the next step; None when the step is to be asked again."""
        from deskpilot.pilot import service

        try:
            return await self.thinking("The pilot is thinking…", service.respond, self.deps, self.caller,
                                       self.session_id, response)
        except ValidationFailed as e:
            if not self.answers.interactive:
                raise
            print_error(e)
            return None
        except (NoLLMNoFlow, StepGenerationFailed) as e:
            return await self.recover(e)

    async def recover(self, error: NoLLMNoFlow | StepGenerationFailed) -> TurnResult:
        """The answer is stored but no next step came: at the terminal retry, escalate or pause; else the error."""
        from deskpilot.pilot import service

        # A runbook that has ended does not go on by retrying unless a model can take over.
        can_retry = error.extra.get("cause") != "flow_exhausted" or self.deps.llm.configured
        while self.answers.interactive:
            print_error(error)
            choices = ("r retry · " if can_retry else "") + "e <reason> escalate to the team · q pause and quit"
            console.print(f"[dim]Your answer is saved. {choices}[/dim]")
            word, rest = _head(self.answers.next() or "q")
            if word in _PAUSE:
                raise Interrupted(await self.pause())
            if word in _ESCALATE and rest:
                raise Interrupted(await self.escalate(rest))
            if can_retry and word in ("r", "retry") and not rest:
                try:
                    return await self.thinking("The pilot is thinking…", service.retry_generation, self.deps,
                                               self.caller, self.session_id)
                except (NoLLMNoFlow, StepGenerationFailed) as e:
                    error = e
        raise error

    # -- endings -----------------------------------------------------------------------------

    async def pause(self) -> int:
        from deskpilot.pilot import service

        await self.call(service.pause, self.caller, self.session_id)
        console.print("[yellow]Session paused.[/yellow] Resume it")
        console.print(f"  in the console: {self.console_url}", soft_wrap=True)
        console.print(f"  over the API:   POST /api/v1/sessions/{self.session_id}/resume, then answer with "
                      f"POST /api/v1/sessions/{self.session_id}/responses", soft_wrap=True)
        return EXIT_OPEN

    async def accept(self, step: StepOut, details: str | None) -> int:
        from deskpilot.pilot import service

        summary = str(step.content.get("resolution_summary") or step.content.get("text") or "").strip()
        if not self.resolve:
            doc = await self.call(service.get_documentation, self.caller, self.session_id)
            print_documentation(doc)
            console.print("[green]Resolution accepted.[/green] The session stays open (--no-resolve); resolve it")
            console.print(f"  in the console: {self.console_url}", soft_wrap=True)
            console.print(f"  over the API:   POST /api/v1/sessions/{self.session_id}/resolve", soft_wrap=True)
            return EXIT_RESOLVED
        request = ResolveRequest(resolution_summary=summary[:10_000] or "Resolved",
                                 resolution_action=details[:10_000] if details else None)
        closed = await self.thinking("Resolving and writing the documentation…", service.resolve, self.deps,
                                     self.caller, self.session_id, request)
        print_documentation(closed.documentation)
        match closed.psa_push_status:
            case "pushed":
                console.print("[green]Documentation and time entry pushed to the PSA ticket.[/green]")
            case "failed":
                console.print(Text(f"PSA push failed ({closed.psa_push_error}); retry it from the console.",
                                   style="yellow"))
            case _:
                pass
        if closed.member_mapping_warning:
            console.print(Text(closed.member_mapping_warning, style="yellow"))
        if self.deps.jobs is not None:
            console.print("[dim]Queued for the knowledge flywheel: a draft runbook may follow for a lead to "
                          "approve.[/dim]")
        console.print(Text.assemble(("Session resolved: ", "bold green"), self.console_url), soft_wrap=True)
        return EXIT_RESOLVED

    async def escalate(self, reason: str) -> int:
        from deskpilot.pilot import service

        result = await self.thinking("Escalating and writing the hand-over…", service.escalate, self.deps,
                                     self.caller, self.session_id, EscalateRequest(reason=reason[:10_000]))
        print_documentation(result.documentation)
        package = result.package
        for title, items in (("Remaining hypotheses", package.remaining_hypotheses),
                             ("Suggested next steps", package.suggested_next_steps)):
            if items:
                console.print(Text(title + ":\n" + "\n".join(f"  • {i}" for i in items)))
        notified = len(result.notified_user_ids)
        console.print(f"[yellow]Session escalated to the team[/yellow] ({notified} notified); it waits in the "
                      "escalation queue for a colleague to pick it up:")
        console.print(f"  {self.console_url}", soft_wrap=True)
        return EXIT_OPEN


# --- the command ----------------------------------------------------------------------------


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as e:
        err_console.print(f"[red]configuration error:[/red] {e}")
        raise typer.Exit(EXIT_ERROR) from e


def _fail(code: str, detail: str) -> typer.Exit:
    print_error(DeskpilotError(detail, code=code))
    return typer.Exit(EXIT_ERROR)


def _scripted_answers(answers: str | None, answers_file: Path | None) -> list[str] | None:
    if answers is not None and answers_file is not None:
        raise _fail("invalid_arguments", "Give --answers or --answers-file, not both")
    if answers_file is not None:
        try:
            return read_answers_file(answers_file)
        except (OSError, UnicodeDecodeError) as e:
            raise _fail("answers_file_unreadable", f"Cannot read {answers_file}: {e}") from e
    return split_answers(answers) if answers is not None else None


def _log_text(log: Path | None) -> str:
    if log is None:
        return ""
    try:
        return log.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise _fail("log_unreadable", f"Cannot read {log}: {e}") from e


def _job_backend(settings: Settings) -> JobBackend | None:
    """Celery, when configured: its workers run the flywheel analysis of a session resolved here.

    In-process jobs would die with this command, so without Celery the analysis stays `pending`.
    """
    if settings.jobs.backend != "celery":
        return None
    import deskpilot.pilot.jobs  # noqa: F401  (registers the analysis handler the backend checks names against)
    from deskpilot.jobs import registry
    from deskpilot.jobs.celery_backend import CeleryBackend

    return CeleryBackend(settings, registry)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The terminal is the session's UI: deskpilot's own warnings (a model that fails, say) are shown as errors."""
    logger = logging.getLogger("deskpilot")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def _pilot(settings: Settings, request: SessionCreate, *, email: str | None, client: str | None,
                 scripted: list[str] | None, resolve: bool) -> int:
    from deskpilot.llm import LLM, SqlRecorder
    from deskpilot.pilot.engine import PilotDeps
    from deskpilot.security.crypto import SecretBox

    db = Database(settings.database.url)
    llm: LLM | None = None
    jobs: JobBackend | None = None
    run: PilotRun | None = None
    try:
        await check_database(db)
        user, account = await resolve_user(db, email)
        caller = Caller(user_id=user.id, account_id=account.id, team_id=user.team_id, name=user.name)
        client_name: str | None = None
        if client is not None:
            client_id, client_name = await resolve_client(db, account.id, client)
            request = request.model_copy(update={"client_id": client_id})
        llm = LLM(settings.llm, recorder=SqlRecorder(db))
        jobs = _job_backend(settings)
        secrets = SecretBox([k.get_secret_value() for k in settings.security.encryption_keys])
        deps = PilotDeps(llm=llm, secrets=secrets, jobs=jobs)
        run = PilotRun(settings=settings, db=db, deps=deps, caller=caller, answers=Answers(scripted), resolve=resolve)
        console.rule("[bold]deskpilot pilot[/bold]")
        console.print(_labelled("Engineer", f"{user.name} <{user.email}> · {account.name}"))
        if client_name is not None:
            console.print(_labelled("Client", client_name))
        first = await run.start(request)
        return await run.loop(first)
    except Interrupted as stop:
        return stop.code
    except DeskpilotError as e:
        print_error(e)
        if run is not None and run.session_id is not None:
            if isinstance(e, UnknownOption | InvalidResponse | Conflict):
                err_console.print(f"The session is still open: {run.console_url}", soft_wrap=True)
            else:
                err_console.print(f"What was entered is saved in session {run.session_id}: {run.console_url}",
                                  soft_wrap=True)
            if isinstance(e, NoLLMNoFlow | StepGenerationFailed):
                err_console.print(f"Once a model or a matching flow is available: POST /api/v1/sessions/"
                                  f"{run.session_id}/retry", soft_wrap=True)
        return EXIT_ERROR
    finally:
        if jobs is not None:
            await jobs.stop()
        if llm is not None:
            await llm.aclose()
        await db.dispose()


def pilot_command(
    problem: Annotated[str, typer.Argument(help="The problem, in your words.", show_default=False)],
    log: Annotated[Path | None, typer.Option("--log", help="A file of log output to attach to the intake.")] = None,
    as_email: Annotated[str | None, typer.Option(
        "--as", help="Email of the engineer to act as (default: the first lead or owner of the only account).")
    ] = None,
    client: Annotated[str | None, typer.Option("--client", help="The client (customer) the problem is for.")] = None,
    answers: Annotated[str | None, typer.Option(
        "--answers", help='Answers in order, separated by ";" (write a literal ";" as "\\;"); no prompts.')
    ] = None,
    answers_file: Annotated[Path | None, typer.Option(
        "--answers-file", help="Answers in order, one a line (# starts a comment line); no prompts.")
    ] = None,
    resolve: Annotated[bool, typer.Option(
        "--resolve/--no-resolve", help="Resolve the session when a suggested resolution is accepted.")
    ] = True,
) -> None:
    """Run a guided troubleshooting session in the terminal and print its documentation.

    Answer a question with an option's number or value, or free text where the step takes it; "s" skips.

    Answer an action or a suggested resolution with "y" or "n", optionally followed by details.

    "e REASON" escalates to your team; "q" pauses and quits.

    Exit status: 0 resolved, 3 paused or escalated (still open), 1 error.
    """
    scripted = _scripted_answers(answers, answers_file)
    request = SessionCreate(text=problem, log_content=_log_text(log))
    settings = _settings()
    with _quiet_logs():
        code = asyncio.run(_pilot(settings, request, email=as_email, client=client, scripted=scripted,
                                  resolve=resolve))
    raise typer.Exit(code)

