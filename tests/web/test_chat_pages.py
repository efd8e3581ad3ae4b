"""Chat pages over HTTP: the list and "New chat", a chat's server-rendered state, lifecycle forms, access."""

from __future__ import annotations

import html
import json
import re
import uuid
from typing import Any

import httpx
import pytest

from deskpilot.api.state import AppState
from deskpilot.chat.models import ChatTurn
from deskpilot.diagnosis import service as diagnosis
from deskpilot.diagnosis.schemas import FactCreate
from deskpilot.identity.models import Role
from deskpilot.pilot import branches as branching
from deskpilot.pilot.models import PilotSession, SessionBranch, SessionMessage
from deskpilot.storage import utcnow
from deskpilot.web.routes.chat import segments
from tests.conftest import Tenant
from tests.web.conftest import login

_CHAT_URL = re.compile(r"^/chat/([0-9a-f-]{36})$")
_STATE = re.compile(r"data-state='([^']*)'")


async def new_chat(client: httpx.AsyncClient, csrf: str) -> uuid.UUID:
    response = await client.post("/chat", data={"csrf_token": csrf})
    assert response.status_code == 303, response.text
    found = _CHAT_URL.match(response.headers["location"])
    assert found, response.headers["location"]
    return uuid.UUID(found.group(1))


def state_of(page: str) -> Any:
    found = _STATE.search(page)
    assert found, "the chat page carries no data-state"
    return json.loads(html.unescape(found.group(1)))


async def add_exchange(
    app_state: AppState,
    tenant: Tenant,
    chat_id: uuid.UUID,
    user_text: str,
    reply: str,
    *,
    status: str = "complete",
    parts: list[dict[str, Any]] | None = None,
    branch_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Store one exchange as a finished (or running) turn would leave it; returns the two message ids."""
    async with app_state.db.session(tenant.account_id) as db:
        session = await db.get(PilotSession, chat_id)
        assert session is not None
        rows = []
        for role, content in (("user", user_text), ("assistant", reply)):
            session.message_seq += 1
            rows.append(
                SessionMessage(
                    id=uuid.uuid4(),
                    session_id=chat_id,
                    seq=session.message_seq,
                    branch_id=branch_id,
                    role=role,
                    content=content,
                    created_at=utcnow(),
                )
            )
        session.step_count += 2
        turn = ChatTurn(
            id=uuid.uuid4(),
            session_id=chat_id,
            branch_id=branch_id,
            user_id=tenant.users[Role.ENGINEER],
            status=status,
            user_message_id=rows[0].id,
            assistant_message_id=rows[1].id,
            content=reply,
            parts=parts or [],
            started_at=utcnow(),
            finished_at=None if status == "running" else utcnow(),
        )
        db.add_all([*rows, turn])
        await db.commit()
        return rows[0].id, rows[1].id


# --- pure: reply text --------------------------------------------------------------------------------


def test_segments_split_prose_and_fenced_code() -> None:
    text = "Run this:\n\n```powershell\nGet-Service <x>\n```\nThen tell me.\n```\nunclosed"
    assert segments(text) == [
        ("text", "Run this:"),
        ("code", "Get-Service <x>"),
        ("text", "Then tell me."),
        ("code", "unclosed"),
    ]
    assert segments("") == []
    assert segments("one\ntwo") == [("text", "one\ntwo")]


# --- login and the list ---------------------------------------------------------------------------------


async def test_chat_pages_need_a_login(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    chat_id = uuid.uuid4()
    for path in ("/chat", f"/chat/{chat_id}"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=" + path
    refused = await client.post("/chat", data={})
    assert refused.status_code == 303
    assert refused.headers["location"] == "/login"


async def test_list_new_chat_and_the_empty_page(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    listing = await client.get("/chat")
    assert listing.status_code == 200
    assert "<h1>Chat</h1>" in listing.text
    assert 'action="/chat"' in listing.text
    assert ">New chat</button>" in listing.text
    assert "No chats yet." in listing.text
    assert "What will appear here" not in listing.text  # the placeholder section is gone

    chat_id = await new_chat(client, csrf)
    page = await client.get(f"/chat/{chat_id}")
    assert page.status_code == 200
    text = page.text
    assert '<h1 id="chat-title">New Chat</h1>' in text
    assert f'data-session="{chat_id}"' in text
    assert f'data-csrf="{csrf}"' in text
    assert 'id="chat-input"' in text
    assert 'id="chat-send"' in text
    assert "/static/js/chat.js" in text
    assert "<script>" not in text  # CSP: no inline scripts
    assert re.search(r'<a href="/chat"\s+class="active" aria-current="page">', text)
    state = state_of(text)
    assert state["session"]["id"] == str(chat_id)
    assert state["last_turn"] is None
    assert (state["lane"], state["facts"], state["fix"], state["interrupt"]) == (None, [], None, None)

    listing = await client.get("/chat")
    assert f'href="/chat/{chat_id}"' in listing.text
    assert "pill-status-active" in listing.text


async def test_viewers_read_but_cannot_start_chats(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.VIEWER)
    listing = await client.get("/chat")
    assert listing.status_code == 200
    assert ">New chat</button>" not in listing.text
    refused = await client.post("/chat", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert "Not allowed" in refused.text


async def test_new_chat_needs_the_csrf_token(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    await login(client, Role.ENGINEER)
    refused = await client.post("/chat", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert "/chat/" not in refused.headers.get("location", "")


# --- a chat's page ------------------------------------------------------------------------------------


async def test_page_renders_messages_escaped_with_code_blocks_and_the_stored_state(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    flows = [{"flow_id": str(uuid.uuid4()), "name": "Outlook credential prompts", "score": 0.82}]
    usage = {"input_tokens": 120, "output_tokens": 40, "model": "test:chat"}
    await add_exchange(
        app_state,
        tenant_a,
        chat_id,
        "Outlook <b>keeps</b> asking",
        "Check the cached credentials:\n```\ncmdkey /list <all>\n```\nThen restart Outlook.",
        parts=[{"type": "data-suggested-flows", "data": flows}, {"type": "data-token-usage", "data": usage}],
    )
    async with app_state.db.session(tenant_a.account_id) as db:
        await diagnosis.add_user_note(
            db,
            account_id=tenant_a.account_id,
            session_id=chat_id,
            user_id=tenant_a.users[Role.ENGINEER],
            body=FactCreate(text="Only on VPN"),
        )
        await db.commit()

    page = (await client.get(f"/chat/{chat_id}")).text
    assert "Outlook &lt;b&gt;keeps&lt;/b&gt; asking" in page  # user text is text, never markup
    assert '<pre class="code"><code>cmdkey /list &lt;all&gt;</code></pre>' in page
    assert '<p class="chat-text">Then restart Outlook.</p>' in page
    assert page.count('class="chat-msg chat-user"') == 1
    assert page.count('class="chat-msg chat-assistant"') == 1
    state = state_of(page)
    assert state["flows"] == flows
    assert state["usage"] == usage
    assert state["last_turn"]["status"] == "complete"
    assert [(f["source_type"], f["text"]) for f in state["facts"]] == [("user_note", "Only on VPN")]


async def test_a_running_turn_leaves_the_reply_to_the_script(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    _, assistant_id = await add_exchange(app_state, tenant_a, chat_id, "VPN drops", "Half a rep", status="running")
    page = (await client.get(f"/chat/{chat_id}")).text
    assert "VPN drops" in page
    assert f'data-message-id="{assistant_id}"' not in page
    state = state_of(page)
    assert state["last_turn"]["status"] == "running"
    assert state["last_turn"]["assistant_message_id"] == str(assistant_id)


async def test_a_paused_turn_carries_its_approval_request(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    interrupt = {
        "action_requests": [
            {
                "name": "post_ticket_note",
                "args": {"ticket_id": "4711", "text": "Done"},
                "approval_id": str(uuid.uuid4()),
                "tool_call_id": "call_1",
                "summary": "Post a note to ticket 4711",
                "expires_at": "2030-01-01T00:00:00",
            }
        ],
        "review_configs": [],
        "interrupt_type": "approval",
        "context": {},
    }
    await add_exchange(
        app_state,
        tenant_a,
        chat_id,
        "Note it on the ticket",
        "I'll post the note.",
        status="awaiting_approval",
        parts=[{"type": "data-interrupt-request", "data": interrupt}],
    )
    assert state_of((await client.get(f"/chat/{chat_id}")).text)["interrupt"] == interrupt


async def test_pause_resume_and_resolve_forms(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    page = (await client.get(f"/chat/{chat_id}")).text
    assert f'action="/chat/{chat_id}/pause"' in page
    assert f'action="/chat/{chat_id}/resolve"' in page

    paused = await client.post(f"/chat/{chat_id}/pause", data={"csrf_token": csrf})
    assert paused.status_code == 303
    assert paused.headers["location"] == f"/chat/{chat_id}?done=paused"
    page = (await client.get(paused.headers["location"])).text
    assert "Chat paused." in page
    assert 'id="chat-status">Paused<' in page
    assert f'action="/chat/{chat_id}/resume"' in page

    assert (await client.post(f"/chat/{chat_id}/resume", data={"csrf_token": csrf})).status_code == 303
    resolved = await client.post(f"/chat/{chat_id}/resolve", data={"csrf_token": csrf})
    page = (await client.get(resolved.headers["location"])).text
    assert 'id="chat-status">Resolved<' in page
    assert re.search(r'<textarea id="chat-input"[^>]*disabled', page)
    assert f'action="/chat/{chat_id}/resolve"' not in page

    again = await client.post(f"/chat/{chat_id}/pause", data={"csrf_token": csrf})
    assert again.status_code == 409
    assert "Not possible" in again.text


@pytest.mark.parametrize("path", ["", "/pause"])
async def test_another_accounts_chat_is_not_found(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant, path: str
) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    csrf_b = await login(client, Role.OWNER, slug="globex-support")
    if path:
        response = await client.post(f"/chat/{chat_id}{path}", data={"csrf_token": csrf_b})
    else:
        response = await client.get(f"/chat/{chat_id}")
    assert response.status_code == 404
    assert "Chat not found" in response.text
    assert f"/chat/{chat_id}" not in (await client.get("/chat")).text
    assert (await client.get(f"/chat/{uuid.uuid4()}")).status_code == 404


async def test_a_colleagues_chat_is_refused_and_a_guided_session_is_no_chat(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    await login(client, Role.LEAD)
    colleague = await client.get(f"/chat/{chat_id}")
    assert colleague.status_code == 403
    assert "Not your chat" in colleague.text
    assert f"/chat/{chat_id}" not in (await client.get("/chat")).text
    async with app_state.db.session(tenant_a.account_id) as db:
        guided = PilotSession(
            kind="guided", user_id=tenant_a.users[Role.LEAD], status="active", intake={}, intake_type="free_text"
        )
        db.add(guided)
        await db.commit()
    assert (await client.get(f"/chat/{guided.id}")).status_code == 404


async def fork_main_path(
    app_state: AppState, tenant: Tenant, chat_id: uuid.UUID, labels: tuple[str, ...]
) -> list[uuid.UUID]:
    """Fork the chat's main path after its last message as a fork on the main path does (no switch)."""
    async with app_state.db.session(tenant.account_id) as db:
        session = await db.get(PilotSession, chat_id)
        assert session is not None
        root = await branching.create_root(db, session)
        lineage = branching.child_lineage(root.lineage, root.id, session.message_seq)
        children = [
            SessionBranch(
                id=uuid.uuid4(),
                account_id=tenant.account_id,
                session_id=chat_id,
                parent_branch_id=root.id,
                label=label,
                description=f"Check the {label.lower()}",
                status="untried",
                position=i,
                lineage=lineage,
                findings=[],
                created_at=utcnow(),
            )
            for i, label in enumerate(labels)
        ]
        db.add_all(children)
        await db.commit()
        return [root.id, *(c.id for c in children)]


async def test_the_page_carries_the_branch_tree_and_shows_the_active_branchs_conversation(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    assert state_of((await client.get(f"/chat/{chat_id}")).text)["branches"] == []
    await add_exchange(app_state, tenant_a, chat_id, "The network drops", "Two causes fit equally well.")
    root, port, driver = await fork_main_path(app_state, tenant_a, chat_id, ("Switch port", "NIC driver"))

    state = state_of((await client.get(f"/chat/{chat_id}")).text)
    tree = (await client.get(f"/api/v1/chats/{chat_id}/branches")).json()
    assert state["branches"] == tree  # the same tree chat.js reads from GET /chats/{id}/branches
    [main] = state["branches"]
    assert (main["id"], main["parent_branch_id"], main["is_active"]) == (str(root), None, True)
    assert [(c["id"], c["label"], c["status"], c["is_active"]) for c in main["children"]] == [
        (str(port), "Switch port", "untried", False),
        (str(driver), "NIC driver", "untried", False),
    ]
    assert main["children"][0]["description"] == "Check the switch port"

    # On a branch the page shows that branch's conversation: the main path up to the fork, then its own.
    switched = await client.post(f"/api/v1/chats/{chat_id}/branches/{port}/switch", headers={"X-CSRF-Token": csrf})
    assert switched.status_code == 200, switched.text
    await add_exchange(app_state, tenant_a, chat_id, "Checked the port", "Port 12 shows CRC errors.", branch_id=port)
    page = (await client.get(f"/chat/{chat_id}")).text
    assert "Two causes fit equally well." in page
    assert "Port 12 shows CRC errors." in page
    [main] = state_of(page)["branches"]
    assert [(c["label"], c["status"], c["is_active"]) for c in main["children"]] == [
        ("Switch port", "active", True),
        ("NIC driver", "untried", False),
    ]
    moved = await client.post(f"/api/v1/chats/{chat_id}/branches/{driver}/switch", headers={"X-CSRF-Token": csrf})
    assert moved.status_code == 200, moved.text
    page = (await client.get(f"/chat/{chat_id}")).text
    assert "Two causes fit equally well." in page
    assert "Port 12 shows CRC errors." not in page
    assert page.count('class="chat-msg chat-user"') == 1


async def test_a_chat_is_renamed_from_its_page(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    csrf = await login(client, Role.ENGINEER)
    chat_id = await new_chat(client, csrf)
    page = (await client.get(f"/chat/{chat_id}")).text
    assert f'action="/chat/{chat_id}/rename"' in page
    done = await client.post(f"/chat/{chat_id}/rename", data={"csrf_token": csrf, "title": "Printer <queue>"})
    assert done.status_code == 303
    page = (await client.get(done.headers["location"])).text
    assert '<h1 id="chat-title">Printer &lt;queue&gt;</h1>' in page
    assert "Chat renamed." in page
    refused = await client.post(f"/chat/{chat_id}/rename", data={"csrf_token": csrf, "title": " "})
    assert refused.status_code == 422
