"""Settings: own profile and password, team and user management, API tokens."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from deskpilot.api.routing import JSONRoute
from deskpilot.errors import DeskpilotError
from deskpilot.events import audit
from deskpilot.identity import service as identity
from deskpilot.identity.models import Role
from deskpilot.identity.schemas import TeamCreate, TokenCreate, UserCreate
from deskpilot.security.passwords import MIN_PASSWORD_LENGTH, verify_password
from deskpilot.storage import utcnow
from deskpilot.web.console import Console, ConsoleDep, set_session_cookie
from deskpilot.web.rendering import render, render_fragment

router = APIRouter(prefix="/settings", include_in_schema=False, route_class=JSONRoute)

ROLES = list(Role)
TOKEN_LIFETIMES: dict[str, str] = {"": "Never", "30": "30 days", "90": "90 days", "365": "1 year"}


def readable(exc: DeskpilotError | ValidationError) -> str:
    """A message for a person: the domain error's detail, or each invalid field by its form label."""
    if isinstance(exc, DeskpilotError):
        return exc.detail[:1].upper() + exc.detail[1:]
    labels = {"email": "Email", "name": "Name", "password": "Password", "role": "Role", "team_id": "Team"}
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{labels.get(field, field.capitalize())}: {message[:1].lower() + message[1:]}")
    return "; ".join(parts) + "."


def _redirect(path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?notice={notice}", status_code=303)


def _request_id(console: Console) -> str | None:
    value = getattr(console.request.state, "request_id", None)
    return value if isinstance(value, str) else None


def _audit(console: Console, action: str, resource_type: str, resource_id: uuid.UUID,
           details: dict[str, Any] | None = None) -> None:
    me = console.principal
    audit.record(console.session, account_id=me.account_id, actor=me.actor, action=action,
                 resource_type=resource_type, resource_id=resource_id, details=details,
                 request_id=_request_id(console))


def _parse_team(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@router.get("")
async def page_settings(console: ConsoleDep) -> Response:
    return RedirectResponse("/settings/profile", status_code=303)


# --- profile --------------------------------------------------------------------------------


async def _profile_page(console: Console, *, status_code: int = 200, error: str | None = None) -> HTMLResponse:
    user = await identity.get_user(console.session, console.principal.user_id)
    team = await identity.get_team(console.session, user.team_id) if user.team_id else None
    return await render(console, "settings/profile.html", active="settings", tab="profile", status_code=status_code,
                        user=user, team=team, error=error, min_password=MIN_PASSWORD_LENGTH)


@router.get("/profile")
async def page_profile(console: ConsoleDep) -> HTMLResponse:
    return await _profile_page(console)


@router.post("/profile/password")
async def submit_password(
    console: ConsoleDep,
    current_password: Annotated[str, Form(max_length=256)] = "",
    new_password: Annotated[str, Form(max_length=256)] = "",
    confirm_password: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    user = await identity.get_user(console.session, console.principal.user_id)
    if not user.password_hash or not verify_password(user.password_hash, current_password):
        return await _profile_page(console, status_code=422, error="Your current password is wrong.")
    if new_password != confirm_password:
        return await _profile_page(console, status_code=422, error="The new password and its confirmation differ.")
    try:
        await identity.set_password(console.session, user.id, new_password)
    except DeskpilotError as e:
        await console.session.rollback()
        return await _profile_page(console, status_code=e.status, error=readable(e))
    _audit(console, "user.password_change", "user", user.id)
    await console.session.commit()
    # A new password signs the user out everywhere else; this browser gets a cookie of the new epoch.
    response = _redirect("/settings/profile", "password-changed")
    set_session_cookie(response, console.state, user)
    return response


# --- team and users -------------------------------------------------------------------------


def _assignable_roles(console: Console) -> list[Role]:
    # Only an owner may hand out the owner role, as in the API.
    return [r for r in ROLES if r is not Role.OWNER or console.principal.role is Role.OWNER]


async def _team_context(console: Console) -> dict[str, Any]:
    users = await identity.list_users(console.session)
    teams = await identity.list_teams(console.session)
    members: dict[uuid.UUID, int] = {}
    for u in users:
        if u.team_id is not None:
            members[u.team_id] = members.get(u.team_id, 0) + 1
    return {
        "users": users,
        "teams": teams,
        "team_names": {t.id: t.name for t in teams},
        "members": members,
        "can_manage": console.principal.can(Role.ADMIN),
        "roles": _assignable_roles(console),
    }


async def _team_page(console: Console, *, status_code: int = 200, **forms: Any) -> HTMLResponse:
    forms.setdefault("add_values", {})
    return await render(console, "settings/team.html", active="settings", tab="team", status_code=status_code,
                        **await _team_context(console), **forms)


async def _user_row(console: Console, user_id: uuid.UUID, *, status_code: int = 200,
                    row_error: str | None = None, row_notice: str | None = None) -> HTMLResponse:
    context = await _team_context(console)
    user = await identity.get_user(console.session, user_id)
    return render_fragment(console, "settings/_user_row.html", status_code=status_code, user=user,
                           row_error=row_error, row_notice=row_notice, **context)


@router.get("/team")
async def page_team(console: ConsoleDep) -> HTMLResponse:
    return await _team_page(console)


@router.post("/team/users")
async def submit_new_user(
    console: ConsoleDep,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=20)] = Role.ENGINEER.value,
    team_id: Annotated[str, Form(max_length=40)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    console.require(Role.ADMIN)
    values = {"email": email, "name": name, "role": role, "team_id": team_id}
    try:
        body = UserCreate(email=email.strip(), name=name.strip(), role=role, password=password or None,
                          team_id=_parse_team(team_id))
        if body.password is None:
            return await _team_page(console, status_code=422, add_values=values,
                                    add_error="Set an initial password; the user can change it under Profile.")
        if body.role is Role.OWNER and console.principal.role is not Role.OWNER:
            return await _team_page(console, status_code=403, add_values=values,
                                    add_error="Only an owner can add another owner.")
        user = await identity.create_user(
            console.session, account_id=console.principal.account_id, email=body.email, name=body.name,
            role=body.role, password=body.password, team_id=body.team_id,
        )
    except (DeskpilotError, ValidationError) as e:
        await console.session.rollback()
        status_code = e.status if isinstance(e, DeskpilotError) else 422
        return await _team_page(console, status_code=status_code, add_values=values, add_error=readable(e))
    _audit(console, "user.create", "user", user.id, {"role": body.role.value})
    await console.session.commit()
    return _redirect("/settings/team", "user-created")


async def _change_user(console: Console, user_id: uuid.UUID, *, role: Role | None = None,
                       team_id: uuid.UUID | None = None, clear_team: bool = False,
                       is_active: bool | None = None) -> Response:
    """Apply an admin's change to one user; htmx gets the row back, plain forms a redirect."""
    console.require(Role.ADMIN)
    me = console.principal
    refusal: tuple[int, str] | None = None
    try:
        target = await identity.get_user(console.session, user_id)
        if target.role is Role.OWNER and me.role is not Role.OWNER:
            refusal = 403, "Only an owner can change another owner."
        elif role is Role.OWNER and me.role is not Role.OWNER:
            refusal = 403, "Only an owner can make another user an owner."
        elif is_active is False and target.id == me.user_id:
            refusal = 409, "You cannot deactivate your own account."
        else:
            await identity.update_user(console.session, user_id, role=role, team_id=team_id, clear_team=clear_team,
                                       is_active=is_active)
    except DeskpilotError as e:
        await console.session.rollback()
        if e.status == 404:
            return await _team_page(console, status_code=404, row_error=readable(e))
        refusal = e.status, readable(e)
    if refusal is not None:
        if console.is_htmx:
            return await _user_row(console, user_id, status_code=refusal[0], row_error=refusal[1])
        return await _team_page(console, status_code=refusal[0], row_error=refusal[1])
    details: dict[str, Any] = {}
    if role is not None:
        details["role"] = role.value
    if team_id is not None or clear_team:
        details["team_id"] = str(team_id) if team_id else None
    if is_active is not None:
        details["is_active"] = is_active
    _audit(console, "user.update", "user", user_id, details)
    await console.session.commit()
    await identity.announce_invalidation(console.state.pubsub, user_id=user_id)
    if console.is_htmx:
        return await _user_row(console, user_id, row_notice="Saved.")
    return _redirect("/settings/team", "user-updated")


@router.post("/team/users/{user_id}")
async def submit_user_update(
    console: ConsoleDep,
    user_id: uuid.UUID,
    role: Annotated[str, Form(max_length=20)] = "",
    team_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    try:
        new_role = Role(role) if role else None
    except ValueError:
        new_role = None
    team = _parse_team(team_id)
    return await _change_user(console, user_id, role=new_role, team_id=team, clear_team=team is None)


@router.post("/team/users/{user_id}/active")
async def submit_user_active(
    console: ConsoleDep, user_id: uuid.UUID, active: Annotated[str, Form(max_length=5)] = "false"
) -> Response:
    return await _change_user(console, user_id, is_active=active == "true")


@router.post("/team/teams")
async def submit_new_team(console: ConsoleDep, name: Annotated[str, Form(max_length=200)] = "") -> Response:
    console.require(Role.ADMIN)
    try:
        body = TeamCreate(name=name.strip())
        team = await identity.create_team(console.session, account_id=console.principal.account_id, name=body.name)
    except (DeskpilotError, ValidationError) as e:
        await console.session.rollback()
        status_code = e.status if isinstance(e, DeskpilotError) else 422
        return await _team_page(console, status_code=status_code, team_value=name, team_error=readable(e))
    _audit(console, "team.create", "team", team.id)
    await console.session.commit()
    return _redirect("/settings/team", "team-created")


# --- API tokens -----------------------------------------------------------------------------


async def _tokens_context(console: Console) -> dict[str, Any]:
    # Admins see every token of the account so they can revoke leaked ones; others see their own.
    see_all = console.principal.can(Role.ADMIN)
    tokens = await identity.list_api_tokens(console.session, user_id=None if see_all else console.principal.user_id)
    owners = {u.id: u.name for u in await identity.list_users(console.session)} if see_all else {}
    return {"tokens": tokens, "see_all": see_all, "owners": owners, "now": utcnow(), "lifetimes": TOKEN_LIFETIMES}


async def _tokens_page(console: Console, *, status_code: int = 200, **forms: Any) -> HTMLResponse:
    return await render(console, "settings/tokens.html", active="settings", tab="tokens", status_code=status_code,
                        headers={"Cache-Control": "no-store"}, **await _tokens_context(console), **forms)


@router.get("/tokens")
async def page_tokens(console: ConsoleDep) -> HTMLResponse:
    return await _tokens_page(console)


@router.post("/tokens")
async def submit_new_token(
    console: ConsoleDep,
    name: Annotated[str, Form(max_length=200)] = "",
    lifetime: Annotated[str, Form(max_length=4)] = "",
) -> Response:
    days = int(lifetime) if lifetime in TOKEN_LIFETIMES and lifetime else None
    try:
        body = TokenCreate(name=name.strip(), expires_at=utcnow() + timedelta(days=days) if days else None)
        user = await identity.get_user(console.session, console.principal.user_id)
        issued = await identity.create_api_token(console.session, user=user, name=body.name,
                                                 expires_at=body.expires_at)
    except (DeskpilotError, ValidationError) as e:
        await console.session.rollback()
        status_code = e.status if isinstance(e, DeskpilotError) else 422
        return await _tokens_page(console, status_code=status_code, create_error=readable(e), name_value=name)
    _audit(console, "token.create", "api_token", issued.token.id)
    await console.session.commit()
    # Rendered straight from the POST: the secret exists only in this response and is never stored.
    return await _tokens_page(console, status_code=201, issued=issued)


@router.post("/tokens/{token_id}/revoke")
async def submit_revoke_token(console: ConsoleDep, token_id: uuid.UUID) -> Response:
    me = console.principal
    try:
        token = await identity.get_api_token(console.session, token_id)
        if token.user_id != me.user_id and not me.can(Role.ADMIN):
            return await _tokens_page(console, status_code=403,
                                      list_error="Only an admin can revoke another user's token.")
        token = await identity.revoke_api_token(console.session, token_id)
    except DeskpilotError as e:
        await console.session.rollback()
        return await _tokens_page(console, status_code=e.status, list_error=readable(e))
    _audit(console, "token.revoke", "api_token", token.id)
    await console.session.commit()
    await identity.announce_invalidation(console.state.pubsub, token_id=token.id)
    if console.is_htmx:
        context = await _tokens_context(console)
        return render_fragment(console, "settings/_token_row.html", token=token, **context)
    return _redirect("/settings/tokens", "token-revoked")
