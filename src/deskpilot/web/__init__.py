"""Web console: server-rendered pages with htmx, served by the API application."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from deskpilot.api.state import AppState
from deskpilot.web.console import Console, CsrfRejected, LoginRequired, RoleRequired, is_htmx, login_url, safe_next
from deskpilot.web.rendering import STATIC_DIR, render, render_public
from deskpilot.web.routes import approvals, auth, chat, knowledge, notifications, pilot, sections, settings


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    if is_htmx(request):
        # A redirect would be followed inside the XHR and swap a login form into a fragment; send the whole
        # page to the login form instead, and back to the page it was on (not the fragment's URL) afterwards.
        current = urlsplit(request.headers.get("hx-current-url", ""))
        back = safe_next(current.path + (f"?{current.query}" if current.query else ""))
        return Response(status_code=204, headers={"HX-Redirect": login_url(back)})
    return RedirectResponse(login_url(exc.next_url), status_code=303)


async def _csrf_rejected(request: Request, exc: Exception) -> HTMLResponse:
    return render_public(
        request, "error.html", status_code=403, title="This form has expired",
        message="The form was sent without the security token of your current session, so nothing was changed. "
                "Go back, reload the page and try again.",
    )


async def _role_required(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, RoleRequired)
    state: AppState = request.app.state.deskpilot
    principal = request.state.principal
    assert principal.console_session is not None
    # The handler's own session is gone by now; the error page needs one for the layout.
    async with state.db.session(principal.account_id) as session:
        console = Console(request=request, state=state, principal=principal, session=session,
                          csrf_token=state.signer.csrf_token(principal.console_session))
        return await render(console, "error.html", active="error", status_code=403, title="Not allowed",
                            message=f"Your role ({principal.role.value}) cannot do this: {exc}.")


def install(app: FastAPI) -> None:
    """Mount the console's routes and static files on `app`."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.add_exception_handler(RoleRequired, _role_required)
    for module in (auth, sections, settings, notifications, pilot, knowledge, approvals, chat):
        app.include_router(module.router)
