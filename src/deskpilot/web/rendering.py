"""Template environment and the helpers that render whole console pages and fragments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from deskpilot import __version__
from deskpilot.identity import service as identity
from deskpilot.web import bell
from deskpilot.web.console import CSRF_FIELD, Console
from deskpilot.web.nav import SECTIONS

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# Notices travel as fixed keys in the redirect URL, so a crafted link cannot put arbitrary text on a page.
NOTICES: Mapping[str, str] = {
    "signed-out": "You are signed out.",
    "password-changed": "Your password was changed.",
    "user-created": "User added.",
    "user-updated": "User updated.",
    "team-created": "Team created.",
    "token-revoked": "API token revoked.",
    "notifications-read": "All notifications marked as read.",
}


# Console pages load only their own scripts and styles; no inline code, no framing by other sites.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(extra or {})}


def _static(path: str) -> str:
    # The version in the query string makes browsers fetch new assets after an upgrade.
    return f"/static/{path}?v={__version__}"


def _when(value: datetime | None, empty: str = "—") -> str:
    if value is None:
        return empty
    return value.strftime("%Y-%m-%d %H:%M UTC")


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals.update(static=_static, sections=SECTIONS, csrf_field=CSRF_FIELD, version=__version__)
templates.env.filters["when"] = _when


def notice_from(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


async def render(
    console: Console,
    template: str,
    *,
    active: str | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page inside the console layout: header, navigation and notification bell."""
    account = await identity.get_account(console.session, console.principal.account_id)
    context.setdefault("notice", notice_from(console.request))
    context.update(
        me=console.principal,
        account=account,
        csrf_token=console.csrf_token,
        active=active,
        bell=await bell.load(console),
    )
    return templates.TemplateResponse(
        console.request, template, context, status_code=status_code, headers=_headers(headers)
    )


def render_fragment(console: Console, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a piece of a page for an htmx swap."""
    context.update(me=console.principal, csrf_token=console.csrf_token)
    return templates.TemplateResponse(console.request, template, context, status_code=status_code,
                                      headers=_headers(None))


def render_public(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page outside the signed-in layout (login, errors before a session exists)."""
    context.setdefault("notice", notice_from(request))
    return templates.TemplateResponse(request, template, context, status_code=status_code, headers=_headers(None))
