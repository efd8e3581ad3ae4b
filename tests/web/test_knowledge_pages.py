"""Knowledge pages over HTTP: the flow library with filters, a flow's tree and versions, approval, script templates."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from deskpilot.api.state import AppState
from deskpilot.identity.models import Role
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge.models import FlowSource, FlowStatus
from deskpilot.knowledge.schemas import FlowDefinition, parse_flow_document
from deskpilot.web.routes.knowledge import reading_order
from tests.conftest import Tenant
from tests.web.conftest import login

DRAFT = {
    "slug": "printer-offline-drafted", "name": "Printer shows offline after driver update",
    "description": "Drafted from a resolved session.", "problem_domain": "printing",
    "tags": ["printer"], "symptoms": ["Printer offline"],
    "definition": {"start": "q", "nodes": [
        {"id": "q", "type": "question", "text": "Is the printer reachable by ping?",
         "options": [{"value": "yes", "label": "Yes", "next": "a"}, {"value": "no", "label": "No", "next": "r2"}]},
        {"id": "a", "type": "action", "text": "Restart the print spooler", "on_success": "r1", "on_failure": "r2"},
        {"id": "r1", "type": "resolution", "text": "Spooler restarted; printing works."},
        {"id": "r2", "type": "resolution", "outcome": "escalate", "text": "Escalate to the network team."},
    ]},
}


async def _starter(app_state: AppState, tenant: Tenant) -> None:
    async with app_state.db.session(tenant.account_id) as s:
        await knowledge.load_starter_library(s, tenant.account_id)
        await s.commit()


async def _draft(app_state: AppState, tenant: Tenant) -> uuid.UUID:
    async with app_state.db.session(tenant.account_id) as s:
        flow = await knowledge.create_flow(s, account_id=tenant.account_id, document=parse_flow_document(DRAFT),
                                           source=FlowSource.FLYWHEEL, status=FlowStatus.DRAFT)
        await s.commit()
        return flow.id


async def _flow_id(app_state: AppState, tenant: Tenant, slug: str) -> uuid.UUID:
    async with app_state.db.session(tenant.account_id) as s:
        flow = await knowledge.get_flow_by_slug(s, tenant.account_id, slug)
        assert flow is not None
        return flow.id


async def _template_id(app_state: AppState, tenant: Tenant, slug: str) -> uuid.UUID:
    async with app_state.db.session(tenant.account_id) as s:
        template = await knowledge.get_template_by_slug(s, tenant.account_id, slug)
        assert template is not None
        return template.id


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
async def test_flow_library_lists_and_filters(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState, role: Role
) -> None:
    await _starter(app_state, tenant_a)
    await login(client, role)
    page = await client.get("/knowledge")
    assert page.status_code == 200
    html = page.text
    assert "<h1>Knowledge</h1>" in html
    assert html.count('aria-current="page"') == 1  # only the side navigation; tabs use aria-current="true"
    assert '<a href="/knowledge" aria-current="true" class="current">Flows (runbooks)</a>' in html
    rows = re.findall(r'<a class="cell-title" href="/knowledge/flows/', html)
    assert len(rows) >= 25
    for header in ("Domain", "Status", "Version", "Used", "Success rate", "Source"):
        assert f'<th scope="col">{header}</th>' in html
    assert "Outlook keeps asking for credentials (Microsoft 365)" in html
    assert 'class="pill pill-flow-approved">Approved<' in html
    assert 'class="pill pill-source-starter">Starter library<' in html
    m365 = (await client.get("/knowledge", params={"domain": "m365"})).text
    assert "Outlook keeps asking for credentials" in m365
    assert "Printer" not in m365.split('id="flows-heading"')[1]
    assert '<option value="m365" selected>' in m365
    drafts = (await client.get("/knowledge", params={"status": "draft"})).text
    assert "No flows match these filters." in drafts
    ignored = await client.get("/knowledge", params={"domain": "nonsense", "status": "bogus"})
    assert ignored.status_code == 200


async def test_flow_detail_shows_the_tree_versions_and_export(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await _starter(app_state, tenant_a)
    flow_id = await _flow_id(app_state, tenant_a, "outlook-credential-prompts")
    await login(client, Role.VIEWER)
    page = await client.get(f"/knowledge/flows/{flow_id}")
    assert page.status_code == 200
    html = page.text
    assert "<h1>Outlook keeps asking for credentials (Microsoft 365)</h1>" in html
    assert 'id="node-scope"' in html
    assert "Does the prompt also appear in Outlook on the web" in html
    assert re.search(r'<span class="edge-label">Only desktop Outlook</span> <span aria-hidden="true">→</span> '
                     r'<a href="#node-recent-change">step \d+</a>', html)
    assert '<span class="edge-label">Worked</span>' in html
    assert "Escalate" in html
    assert 'href="/knowledge/scripts/' in html
    assert "?p.profile_name" not in html
    assert "Version 1" in html
    assert f'href="/knowledge/flows/{flow_id}/export"' in html
    assert f'action="/knowledge/flows/{flow_id}/approve"' not in html
    exported = await client.get(f"/knowledge/flows/{flow_id}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    assert 'filename="outlook-credential-prompts.yaml"' in exported.headers["content-disposition"]
    assert exported.text.startswith("slug: outlook-credential-prompts")
    older = await client.get(f"/knowledge/flows/{flow_id}", params={"version": 1})
    assert "Decision tree · version 1" in older.text
    missing = await client.get(f"/knowledge/flows/{flow_id}", params={"version": 9})
    assert missing.status_code == 404
    assert (await client.get(f"/knowledge/flows/{uuid.uuid4()}")).status_code == 404
    assert (await client.get(f"/knowledge/flows/{uuid.uuid4()}/export")).status_code == 404


async def test_flywheel_draft_waits_for_a_lead(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    flow_id = await _draft(app_state, tenant_a)
    csrf = await login(client, Role.ENGINEER)
    library = (await client.get("/knowledge")).text
    assert "Waiting for approval" in library
    assert "Printer shows offline after driver update" in library
    assert 'class="pill pill-source-flywheel">Flywheel<' in library
    detail = (await client.get(f"/knowledge/flows/{flow_id}")).text
    assert "written by the knowledge flywheel from a resolved session" in detail
    assert "until a lead approves it" in detail
    assert f'action="/knowledge/flows/{flow_id}/approve"' not in detail
    refused = await client.post(f"/knowledge/flows/{flow_id}/approve", data={"csrf_token": csrf})
    assert refused.status_code == 403

    csrf = await login(client, Role.LEAD)
    detail = (await client.get(f"/knowledge/flows/{flow_id}")).text
    assert f'action="/knowledge/flows/{flow_id}/approve"' in detail
    assert f'action="/knowledge/flows/{flow_id}/archive"' in detail
    assert (await client.post(f"/knowledge/flows/{flow_id}/approve", data={})).status_code == 403  # no CSRF
    approved = await client.post(f"/knowledge/flows/{flow_id}/approve", data={"csrf_token": csrf})
    assert approved.headers["location"] == f"/knowledge/flows/{flow_id}?done=approved"
    detail = (await client.get(approved.headers["location"])).text
    assert "Flow approved: Pilot now matches it to new sessions." in detail
    assert 'class="pill pill-flow-approved">Approved<' in detail
    assert "Approved " in detail
    assert "by Acme IT Lead" in detail
    assert "Waiting for approval" not in (await client.get("/knowledge")).text
    unknown = await client.post(f"/knowledge/flows/{uuid.uuid4()}/approve", data={"csrf_token": csrf})
    assert unknown.status_code == 404


async def test_other_accounts_flows_are_not_found(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant, app_state: AppState
) -> None:
    flow_id = await _draft(app_state, tenant_a)
    csrf = await login(client, Role.OWNER, slug="globex-support")
    assert (await client.get(f"/knowledge/flows/{flow_id}")).status_code == 404
    assert (await client.post(f"/knowledge/flows/{flow_id}/approve", data={"csrf_token": csrf})).status_code == 404


async def test_script_templates_list_detail_and_render(
    client: httpx.AsyncClient, tenant_a: Tenant, app_state: AppState
) -> None:
    await _starter(app_state, tenant_a)
    template_id = await _template_id(app_state, tenant_a, "outlook-profile-reset")
    csrf = await login(client, Role.ENGINEER)
    listing = (await client.get("/knowledge/scripts")).text
    assert "<h1>Knowledge</h1>" in listing
    assert '<a href="/knowledge/scripts" aria-current="true" class="current">Script templates</a>' in listing
    assert "Create a fresh Outlook profile" in listing
    assert "<code>profile_name</code>" in listing
    assert 'class="pill pill-lang">PowerShell<' in listing

    page = (await client.get(f"/knowledge/scripts/{template_id}", params={"p.profile_name": "Mail 2"})).text
    assert "<h1>Create a fresh Outlook profile</h1>" in page
    assert ('<label for="param-profile_name">Name of the new profile <span class="muted">(optional)</span></label>'
            in page)
    assert 'value="Mail 2"' in page
    assert "$ProfileName = {{profile_name}}" in page  # the body before rendering

    rendered = await client.post(f"/knowledge/scripts/{template_id}/render",
                                 headers={"HX-Request": "true", "X-CSRF-Token": csrf},
                                 data={"p.profile_name": "Mail 2.0"})
    assert rendered.status_code == 200
    assert "<html" not in rendered.text
    assert "$ProfileName = &#39;Mail 2.0&#39;" in rendered.text
    assert 'data-copy="rendered-script"' in rendered.text
    invalid = await client.post(f"/knowledge/scripts/{template_id}/render",
                                data={"csrf_token": csrf, "p.profile_name": "bad;name|x"})
    assert invalid.status_code == 422
    assert "Parameter &#39;profile_name&#39;: &#39;bad;name|x&#39; does not match the pattern" in invalid.text
    assert "params.profile_name" not in invalid.text
    assert "<h1>Create a fresh Outlook profile</h1>" in invalid.text
    async with app_state.db.session(tenant_a.account_id) as s:
        assert (await knowledge.get_template(s, template_id)).usage_count == 1

    await login(client, Role.VIEWER)
    viewer = (await client.get(f"/knowledge/scripts/{template_id}")).text
    assert "rendering counts as a use and needs the engineer role" in viewer
    assert (await client.get(f"/knowledge/scripts/{uuid.uuid4()}")).status_code == 404


def test_reading_order_numbers_nodes_breadth_first() -> None:
    tree = reading_order(FlowDefinition.model_validate(DRAFT["definition"]))
    assert [(t.number, t.node.id) for t in tree] == [(1, "q"), (2, "a"), (3, "r2"), (4, "r1")]
    assert tree[0].edges == [("Yes", "a", 2), ("No", "r2", 3)]
    assert tree[1].edges == [("Worked", "r1", 4), ("Didn't work", "r2", 3)]
    assert tree[3].edges == []
