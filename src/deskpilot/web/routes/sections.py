"""The dashboard and the section pages that later features fill in."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from deskpilot.api.routing import JSONRoute
from deskpilot.identity import service as identity
from deskpilot.web.console import Console, ConsoleDep
from deskpilot.web.nav import SECTIONS
from deskpilot.web.rendering import render

router = APIRouter(include_in_schema=False, route_class=JSONRoute)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a section will show and what it depends on, stated plainly until the section exists."""

    what: str
    needs: tuple[str, ...]
    uses_llm: bool


PLANS: dict[str, Plan] = {
    "inbox": Plan(
        "Customer conversations from Slack, WhatsApp and the web widget, including those handed to a human.",
        ("A channel connection and a channel agent set up under Agents.",),
        uses_llm=False,
    ),
    "agents": Plan(
        "Customer-facing agents on channels, and background agents that read mailboxes, chats and folders "
        "on a schedule. Everything they create is marked AI-suggested until a person approves it.",
        ("An LLM provider.", "A channel, mailbox or device connection for the agent to work with."),
        uses_llm=True,
    ),
    "automations": Plan(
        "Automations drafted from a plain-language intent, approved by a person and fired on a schedule; "
        "every run keeps a snapshot of its definition and the result of each step.",
        ("An LLM provider to draft definitions.", "An approver with the lead role or higher."),
        uses_llm=True,
    ),
}


@router.get("/")
async def page_dashboard(console: ConsoleDep) -> HTMLResponse:
    me = console.principal
    team = await identity.get_team(console.session, me.team_id) if me.team_id else None
    return await render(console, "dashboard.html", active=None, team=team,
                        llm_configured=console.state.settings.llm_configured,
                        cards=[s for s in SECTIONS if s.key != "settings"])


async def _section(console: Console, key: str) -> HTMLResponse:
    section = next(s for s in SECTIONS if s.key == key)
    return await render(console, "sections/planned.html", active=key, section=section, plan=PLANS[key],
                        llm_configured=console.state.settings.llm_configured)


@router.get("/inbox")
async def page_inbox(console: ConsoleDep) -> HTMLResponse:
    return await _section(console, "inbox")


@router.get("/agents")
async def page_agents(console: ConsoleDep) -> HTMLResponse:
    return await _section(console, "agents")


@router.get("/automations")
async def page_automations(console: ConsoleDep) -> HTMLResponse:
    return await _section(console, "automations")
