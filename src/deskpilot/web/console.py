"""Console request context: the signed-in user, an account-scoped session, CSRF checks and login redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.api.deps import CSRF_HEADER, SAFE_METHODS, Principal, StateDep, principal_from_cookie
from deskpilot.api.state import AppState
from deskpilot.identity.models import Role, User

CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """No valid session cookie came with a console request; the handler redirects to the login page."""

    def __init__(self, next_url: str | None) -> None:
        super().__init__("login required")
        self.next_url = next_url


class CsrfRejected(Exception):
    """A console form or htmx request came without the CSRF token bound to its session."""


class RoleRequired(Exception):
    """The signed-in user's role is too low for a console action."""

    def __init__(self, role: Role) -> None:
        super().__init__(f"this action needs the {role.value!r} role or higher")
        self.role = role


@dataclass(frozen=True, slots=True)
class Console:
    """Everything a console page handler needs about the request it serves."""

    request: Request
    state: AppState
    principal: Principal
    session: AsyncSession
    csrf_token: str

    def require(self, role: Role) -> None:
        if not self.principal.can(role):
            raise RoleRequired(role)

    @property
    def is_htmx(self) -> bool:
        return is_htmx(self.request)


def set_session_cookie(response: Response, state: AppState, user: User) -> None:
    """Sign `user` in on this browser: a console cookie of the user's current session epoch."""
    security = state.settings.security
    response.set_cookie(
        security.session_cookie, state.signer.issue(user.id, user.account_id, user.session_epoch),
        max_age=security.session_max_age_s, path="/", httponly=True, samesite="lax", secure=security.cookie_secure,
    )


def is_htmx(request: Request) -> bool:
    # Boosted requests want whole pages; only targeted htmx swaps want fragments.
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def safe_next(value: str | None, default: str = "/") -> str:
    """Return `value` when it is a same-site relative path, else `default` (no open redirects)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return default
    return value


def login_url(next_url: str | None) -> str:
    if not next_url or next_url == "/":
        return "/login"
    return "/login?next=" + quote(next_url, safe="/")


async def _submitted_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def get_console(request: Request, state: StateDep) -> AsyncIterator[Console]:
    cookie = request.cookies.get(state.settings.security.session_cookie)
    principal = await principal_from_cookie(state, cookie)
    if principal is None or principal.console_session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target if request.method in SAFE_METHODS else None)
    token = state.signer.csrf_token(principal.console_session)
    # The session cookie rides along with cross-site form posts; only our pages know the token.
    if request.method not in SAFE_METHODS and not state.signer.check_csrf(
        principal.console_session, await _submitted_csrf(request)
    ):
        raise CsrfRejected
    request.state.principal = principal
    async with state.db.session(principal.account_id) as session:
        yield Console(request=request, state=state, principal=principal, session=session, csrf_token=token)


ConsoleDep = Annotated[Console, Depends(get_console)]
