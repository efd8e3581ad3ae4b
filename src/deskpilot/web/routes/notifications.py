"""The notification page, the bell's dropdown fragment and marking notifications read."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from deskpilot.api.routing import JSONRoute
from deskpilot.events import notifications
from deskpilot.web import bell
from deskpilot.web.console import ConsoleDep
from deskpilot.web.rendering import render, render_fragment

router = APIRouter(prefix="/notifications", include_in_schema=False, route_class=JSONRoute)

PAGE_SIZE = 100


@router.get("")
async def page_notifications(console: ConsoleDep) -> HTMLResponse:
    return await render(console, "notifications/page.html", active="notifications",
                        items=await bell.items(console, limit=PAGE_SIZE))


@router.get("/panel")
async def fragment_bell_panel(console: ConsoleDep) -> HTMLResponse:
    return render_fragment(console, "notifications/_panel.html", bell=await bell.load(console), oob=True)


@router.post("/read")
async def submit_read_all(console: ConsoleDep) -> Response:
    marked = await notifications.mark_read(console.session, console.principal.user_id, "all")
    await console.session.commit()
    if marked:
        await notifications.announce_read(console.state.pubsub, console.principal.user_id, 0)
    if console.is_htmx:
        return render_fragment(console, "notifications/_panel.html", bell=await bell.load(console), oob=True)
    return RedirectResponse("/notifications?notice=notifications-read", status_code=303)
