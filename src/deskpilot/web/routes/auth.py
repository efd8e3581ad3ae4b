"""Console sign-in and sign-out with the signed session cookie."""

from __future__ import annotations

import logging
import math
from typing import Annotated, Final

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from deskpilot.api.deps import StateDep, principal_from_cookie
from deskpilot.api.routing import JSONRoute
from deskpilot.api.state import AppState
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.errors import InvalidCredentials, TooManyFailedLogins
from deskpilot.identity.models import User
from deskpilot.web.console import ConsoleDep, safe_next, set_session_cookie
from deskpilot.web.rendering import render_public

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False, route_class=JSONRoute)


def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def _cross_site(request: Request) -> bool:
    # Browsers set Sec-Fetch-Site themselves; refusing cross-site posts stops login CSRF (signing a victim
    # into the attacker's account) without a pre-session token, and works behind proxies that rewrite Host.
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def _login_page(request: Request, *, email: str = "", next_url: str = "/", error: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    return render_public(request, "auth/login.html", status_code=status_code, email=email, next_url=next_url,
                         error=error)


async def _record_failed_login(state: AppState, request: Request, email: str) -> None:
    # Failures for unknown emails have no account to file them under; the access log still has them.
    async with state.db.system_session() as session:
        user = await session.scalar(select(User).where(User.email == identity.normalise_email(email)))
        if user is None:
            logger.info("failed console login for an unknown email")
            return
        audit.record(session, account_id=user.account_id, actor=audit.Actor(None, "login form"),
                     action=identity.LOGIN_FAILED_ACTION, resource_type="user", resource_id=user.id,
                     details={"client": request.client.host if request.client else None},
                     request_id=_request_id(request))
        await session.commit()


# The same words for both of an email's pauses (this process's count, the audit log's), known email or not.
_EMAIL_PAUSED: Final = "Too many wrong passwords for this address"


def _paused(request: Request, email: str, target: str, why: str, wait_s: float) -> HTMLResponse:
    """429: sign-ins paused (no password was checked), with when to try again."""
    seconds = max(1, math.ceil(wait_s))
    minutes = math.ceil(seconds / 60)
    page = _login_page(request, email=email, next_url=target, status_code=429,
                       error=f"{why}: try again in {minutes} minute{'s' if minutes > 1 else ''}.")
    page.headers["Retry-After"] = str(seconds)
    return page


@router.get("/login")
async def page_login(
    request: Request, state: StateDep, next_url: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    target = safe_next(next_url)
    if await principal_from_cookie(state, request.cookies.get(state.settings.security.session_cookie)):
        return RedirectResponse(target, status_code=303)
    return _login_page(request, next_url=target)


@router.post("/login")
async def submit_login(
    request: Request,
    state: StateDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=2000)] = "/",
) -> Response:
    target = safe_next(next_url)
    email = email.strip()
    if _cross_site(request):
        return _login_page(request, email=email, next_url=target, status_code=403,
                           error="This sign-in form was sent from another site. Open the console directly.")
    if not email or not password:
        return _login_page(request, email=email, next_url=target, status_code=422,
                           error="Enter your email address and your password.")
    address = request.client.host if request.client else "unknown"
    wait_s = state.sign_in_failures.refused_for(address)
    if wait_s is not None:
        logger.warning("console sign-in paused for a client address after repeated wrong passwords")
        return _paused(request, email, target, "Too many wrong passwords from this network", wait_s)
    email_key = identity.normalise_email(email)
    wait_s = state.email_failures.refused_for(email_key)
    if wait_s is not None:
        # The same answer whether the address has an account or not.
        return _paused(request, email, target, _EMAIL_PAUSED, wait_s)
    try:
        async with state.db.system_session() as session:
            user = await identity.authenticate_password(session, email, password)
            await session.commit()
    except InvalidCredentials:
        state.sign_in_failures.fail(address)
        state.email_failures.fail(email_key)
        await _record_failed_login(state, request, email)
        return _login_page(request, email=email, next_url=target, status_code=401,
                           error="The email address or password is wrong.")
    except TooManyFailedLogins as e:
        # Not counted as one more failure: no password was tried, and the pause ends as planned.
        logger.warning("console sign-in paused for an email after repeated wrong passwords")
        return _paused(request, email, target, _EMAIL_PAUSED, e.extra["retry_after_s"])
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, state, user)
    return response


@router.post("/logout")
async def submit_logout(console: ConsoleDep) -> Response:
    me = console.principal
    # The cookie is void everywhere, not just deleted from this browser: a copy of it no longer signs anyone in.
    await identity.end_console_sessions(console.session, me.user_id)
    audit.record(console.session, account_id=me.account_id, actor=me.actor, action="user.logout",
                 resource_type="user", resource_id=me.user_id, request_id=_request_id(console.request))
    await console.session.commit()
    response = RedirectResponse("/login?notice=signed-out", status_code=303)
    security = console.state.settings.security
    response.delete_cookie(security.session_cookie, path="/", httponly=True, samesite="lax",
                           secure=security.cookie_secure)
    return response
