"""`deskpilot chat`: the chat copilot in the terminal, replies streamed as they come, approvals at the prompt."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.console import Console
from rich.text import Text

from deskpilot.cli.pilot import _quiet_logs, _settings, check_database, print_error, resolve_user, split_answers
from deskpilot.errors import DeskpilotError
from deskpilot.pilot.access import Caller
from deskpilot.settings import Settings
from deskpilot.storage import Database

if TYPE_CHECKING:
    from deskpilot.chat.service import ChatDeps
    from deskpilot.chat.stream import TurnStream

__all__ = ["chat_command"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
_QUIT: Final = frozenset({"", "q", "quit", "exit"})

console = Console()
err_console = Console(stderr=True)


class Prompter:
    """The engineer's next input: from `--messages` when given (then no prompts), else from the terminal."""

    def __init__(self, scripted: list[str] | None) -> None:
        self._scripted = scripted

    def ask(self, prompt: str) -> str:
        if self._scripted is not None:
            answer = self._scripted.pop(0) if self._scripted else "q"
            console.print(Text(f"{prompt}{answer}", style="dim"))
            return answer
        try:
            return console.input(prompt)
        except EOFError:
            return "q"


def _part(frame: str) -> dict[str, Any] | None:
    data = next((line[6:] for line in frame.splitlines() if line.startswith("data: ")), None)
    if data is None or data == "[DONE]":
        return None
    value = json.loads(data)
    return value if isinstance(value, dict) else None


async def show_turn(stream: TurnStream) -> dict[str, Any] | None:
    """Print a turn as it streams; the interrupt payload when it paused for approval."""
    interrupt: dict[str, Any] | None = None
    console.print(Text("copilot> ", style="bold cyan"), end="")
    async for frame in stream.follow(0):
        part = _part(frame)
        if part is None:
            continue
        kind, data = part.get("type"), part.get("data")
        if kind == "text-delta":
            console.print(part["delta"], end="", markup=False, highlight=False, soft_wrap=True)
        elif kind == "text-end":
            console.print()
        elif kind == "data-task-lane" and data:
            for question in data.get("questions", []):
                console.print(Text(f"  ? {question['text']}", style="yellow"))
            for action in data.get("actions", []):
                command = f"  ({action['command']})" if action.get("command") else ""
                console.print(Text(f"  → {action['label']}{command}", style="yellow"))
        elif kind == "data-facts":
            for fact in data or []:
                console.print(Text(f"  ✓ known: {fact['text']}", style="green"))
        elif kind == "data-suggested-fix" and data:
            console.print(Text(f"  fix ({data['confidence_pct']}%): {data['title']}", style="bold magenta"))
        elif kind == "data-fork" and data:
            labels = ", ".join(b["label"] for b in data["branches"])
            console.print(Text(f"  fork: {data.get('fork_reason') or 'hypotheses'} — {labels}", style="blue"))
        elif kind == "data-interrupt-request":
            interrupt = data
        elif kind == "error":
            err_console.print(Text(f"error {part.get('errorCode')}: {part.get('errorText')}", style="red"))
    return interrupt


def _decisions(interrupt: dict[str, Any], prompter: Prompter) -> list[dict[str, Any]]:
    decisions = []
    for action in interrupt.get("action_requests", []):
        console.print(Text(f"approve? {action['name']} {json.dumps(action['args'])}", style="bold"))
        answer = prompter.ask("  [y]es / [n]o / [a]lways > ").strip().lower()
        decision = {"y": "approve", "yes": "approve", "a": "approve_always", "always": "approve_always"}.get(
            answer, "reject")
        decisions.append({"request_id": action["approval_id"], "decision": decision})
    return decisions


async def run_chat(deps: ChatDeps, db: Database, caller: Caller, first: str, prompter: Prompter) -> str:
    """The conversation until the engineer quits; the chat's id."""
    from deskpilot.approvals.schemas import ResumeDecision
    from deskpilot.chat import service
    from deskpilot.chat.schemas import ChatCreate, MessageIn, ResumeIn

    async with db.session(caller.account_id) as session:
        chat_id = (await service.create_chat(session, caller, ChatCreate())).id
    message = first
    while message.strip().lower() not in _QUIT:
        async with db.session(caller.account_id) as session:
            stream = await service.send_message(session, deps, caller, chat_id, MessageIn(text=message))
        interrupt = await show_turn(stream)
        while interrupt is not None:
            decisions = [ResumeDecision.model_validate(d) for d in _decisions(interrupt, prompter)]
            async with db.session(caller.account_id) as session:
                resumed = await service.resume(session, deps, caller, chat_id, ResumeIn(decisions=decisions))
            interrupt = await show_turn(resumed) if resumed is not None else None
        message = prompter.ask("you> ")
    return str(chat_id)


async def _chat(settings: Settings, first: str, *, email: str | None, prompter: Prompter) -> int:
    from deskpilot.chat.service import ChatDeps
    from deskpilot.chat.stream import TurnStreams
    from deskpilot.llm import LLM, SqlRecorder
    from deskpilot.security.crypto import SecretBox

    db = Database(settings.database.url)
    llm = LLM(settings.llm, recorder=SqlRecorder(db))
    streams = TurnStreams()
    try:
        await check_database(db)
        user, account = await resolve_user(db, email)
        caller = Caller(user_id=user.id, account_id=account.id, team_id=user.team_id, name=user.name)
        secrets = SecretBox([k.get_secret_value() for k in settings.security.encryption_keys])
        deps = ChatDeps(database=db, llm=llm, streams=streams, secrets=secrets)
        console.rule("[bold]deskpilot chat[/bold]")
        chat_id = await run_chat(deps, db, caller, first, prompter)
        console.print(Text(f"Chat {chat_id} is kept; open it in the console under Chat.", style="dim"))
        return EXIT_OK
    except DeskpilotError as e:
        print_error(e)
        return EXIT_ERROR
    finally:
        await streams.shutdown()
        await llm.aclose()
        await db.dispose()


def chat_command(
    message: Annotated[str, typer.Argument(help="Your first message.", show_default=False)],
    as_email: Annotated[str | None, typer.Option(
        "--as", help="Email of the engineer to act as (default: the first lead or owner of the only account).")
    ] = None,
    messages: Annotated[str | None, typer.Option(
        "--messages", help='Later messages and approval answers in order, separated by ";"; no prompts.')
    ] = None,
) -> None:
    """Chat with the copilot in the terminal (needs an LLM provider). An empty line or "q" ends the chat.

    When the copilot wants to run an action that needs approval, answer "y", "n" or "a" (always, for this chat).
    """
    prompter = Prompter(split_answers(messages) if messages is not None else None)
    with _quiet_logs():
        code = asyncio.run(_chat(_settings(), message, email=as_email, prompter=prompter))
    raise typer.Exit(code)
