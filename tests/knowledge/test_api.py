"""Knowledge endpoints: roles, problem codes, YAML import/export, matching and cross-account isolation."""

from __future__ import annotations

from typing import Any

import httpx
import yaml

from deskpilot.identity.models import Role
from deskpilot.knowledge.yaml_io import MAX_YAML_BYTES
from tests.conftest import Tenant
from tests.knowledge.flows import definition, flow_doc, template_doc
from tests.tenancy import assert_invisible_to_other_account

API = "/api/v1"
YAML = {"Content-Type": "application/yaml"}


def _body(**extra: Any) -> dict[str, Any]:
    body = flow_doc(**extra)
    body.pop("slug")
    return body


async def _create_flow(client: httpx.AsyncClient, tenant: Tenant, role: Role = Role.ENGINEER, **extra: Any
                       ) -> dict[str, Any]:
    response = await client.post(f"{API}/flows", json=_body(**extra), headers=tenant.headers(role))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _approved_flow(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    flow = await _create_flow(client, tenant, **extra)
    approved = await client.post(f"{API}/flows/{flow['id']}/approve", headers=tenant.headers(Role.LEAD))
    assert approved.status_code == 200, approved.text
    return approved.json()  # type: ignore[no-any-return]


async def _template(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    response = await client.post(f"{API}/script-templates", json=template_doc(**extra),
                                 headers=tenant.headers(Role.LEAD))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_engineer_creates_draft_and_viewer_reads(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    flow = await _create_flow(client, tenant_a)
    assert (flow["slug"], flow["status"], flow["source"], flow["version"]) == (
        "outlook-keeps-asking-for-a-password", "draft", "user", 1)
    assert flow["created_by"] == str(tenant_a.users[Role.ENGINEER])
    assert flow["definition"]["nodes"][2]["outcome"] == "resolved"
    assert flow["success_rate"] is None
    viewer = tenant_a.headers(Role.VIEWER)
    assert (await client.get(f"{API}/flows/{flow['id']}", headers=viewer)).json()["id"] == flow["id"]
    listed = await client.get(f"{API}/flows", params={"status": "draft"}, headers=viewer)
    assert [f["id"] for f in listed.json()] == [flow["id"]]
    assert "definition" not in listed.json()[0]
    assert (await client.get(f"{API}/flows", params={"status": "approved"}, headers=viewer)).json() == []
    denied = await client.post(f"{API}/flows", json=_body(), headers=viewer)
    assert denied.status_code == 403
    taken = await client.post(f"{API}/flows", json=_body(), headers=tenant_a.headers(Role.ENGINEER))
    assert (taken.status_code, taken.json()["code"]) == (409, "flow_slug_taken")


async def test_invalid_definition_is_a_flow_invalid_problem(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    data = definition()
    data["nodes"][0]["options"][0]["next"] = "ghost"
    response = await client.post(f"{API}/flows", json=_body(definition=data), headers=tenant_a.headers(Role.LEAD))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "flow_invalid"
    assert body["errors"] == [{"field": "definition.nodes.0.options.0.next", "message": "'ghost' is not a node id"}]
    missing = await client.post(f"{API}/flows", json={"definition": definition()}, headers=tenant_a.headers())
    assert (missing.status_code, missing.json()["code"]) == (422, "validation_failed")
    nodes = [{"id": f"n{i}", "type": "resolution", "text": "x"} for i in range(501)]
    huge = await client.post(f"{API}/flows", json=_body(definition={"start": "n0", "nodes": nodes}),
                             headers=tenant_a.headers())
    assert huge.json()["code"] == "flow_invalid"
    assert any(e["field"] == "definition.nodes" for e in huge.json()["errors"])


async def test_edit_rules_versions_approve_and_archive(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    flow = await _create_flow(client, tenant_a)
    url = f"{API}/flows/{flow['id']}"
    engineer, lead = tenant_a.headers(Role.ENGINEER), tenant_a.headers(Role.LEAD)
    own = await client.patch(url, json={"description": "Mine to edit."}, headers=engineer)
    assert own.status_code == 200
    assert own.json()["version"] == 1
    assert (await client.post(f"{url}/approve", headers=engineer)).status_code == 403
    approved = await client.post(f"{url}/approve", headers=lead)
    assert (approved.json()["status"], approved.json()["approved_by"]) == ("approved", str(tenant_a.users[Role.LEAD]))
    late = await client.patch(url, json={"description": "Too late."}, headers=engineer)
    assert late.status_code == 403
    changed = definition()
    changed["nodes"][2]["text"] = "Rebuilt the profile."
    edited = await client.patch(url, json={"definition": changed, "team_id": str(tenant_a.team_id)}, headers=lead)
    assert (edited.json()["version"], edited.json()["team_id"]) == (2, str(tenant_a.team_id))
    bad = await client.patch(url, json={"definition": {"start": "x", "nodes": []}}, headers=lead)
    assert bad.json()["code"] == "flow_invalid"
    cleared = await client.patch(url, json={"team_id": None}, headers=lead)
    assert cleared.json()["team_id"] is None
    versions = (await client.get(f"{url}/versions", headers=tenant_a.headers(Role.VIEWER))).json()
    assert [v["version"] for v in versions] == [2, 1]
    first = (await client.get(f"{url}/versions/1", headers=engineer)).json()
    assert first["definition"]["nodes"][2]["text"] == "Stale credentials removed."
    missing = await client.get(f"{url}/versions/9", headers=engineer)
    assert (missing.status_code, missing.json()["code"]) == (404, "flow_version_not_found")
    assert (await client.delete(url, headers=engineer)).status_code == 403
    archived = await client.delete(url, headers=lead)
    assert archived.json()["status"] == "archived"
    events = (await client.get(f"{API}/audit-events", params={"resource_id": flow["id"]},
                               headers=tenant_a.headers(Role.ADMIN))).json()
    assert {"flow.create", "flow.update", "flow.approve", "flow.archive"} <= {e["action"] for e in events}


async def test_someone_elses_draft_needs_a_lead(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    flow = await _create_flow(client, tenant_a, role=Role.LEAD)
    response = await client.patch(f"{API}/flows/{flow['id']}", json={"name": "Mine now"},
                                  headers=tenant_a.headers(Role.ENGINEER))
    assert response.status_code == 403


async def test_yaml_import_and_export(client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant) -> None:
    stream = yaml.safe_dump_all([flow_doc(slug="one"), flow_doc(slug="two", name="Second")])
    imported = await client.post(f"{API}/flows/import", content=stream, headers={
        **tenant_a.headers(Role.ENGINEER), "Content-Type": "text/plain; charset=utf-8"})
    assert imported.status_code == 200, imported.text
    assert [(f["slug"], f["action"]) for f in imported.json()["flows"]] == [("one", "created"), ("two", "created")]
    flow_id = imported.json()["flows"][0]["id"]
    exported = await client.get(f"{API}/flows/{flow_id}/export", headers=tenant_a.headers(Role.VIEWER))
    assert exported.headers["content-type"].startswith("application/yaml")
    assert 'filename="one.yaml"' in exported.headers["content-disposition"]
    again = await client.post(f"{API}/flows/import", content=exported.content,
                              headers={**tenant_b.headers(Role.ENGINEER), **YAML})
    theirs = again.json()["flows"][0]["id"]
    assert (await client.get(f"{API}/flows/{theirs}/export", headers=tenant_b.headers())).text == exported.text

    conflict = await client.post(f"{API}/flows/import", content=stream, headers={**tenant_a.headers(), **YAML})
    assert (conflict.status_code, conflict.json()["code"]) == (409, "flow_slug_taken")
    engineer_replace = await client.post(f"{API}/flows/import", params={"replace": "true"}, content=stream,
                                         headers={**tenant_a.headers(Role.ENGINEER), **YAML})
    assert engineer_replace.status_code == 403
    replaced = await client.post(f"{API}/flows/import", params={"replace": "true"},
                                 content=yaml.safe_dump(flow_doc(slug="one", name="Renamed")),
                                 headers={**tenant_a.headers(Role.LEAD), **YAML})
    assert replaced.json()["flows"][0]["action"] == "updated"


async def test_yaml_import_problems(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    headers = {**tenant_a.headers(Role.ENGINEER), **YAML}
    bad = flow_doc(slug="bad")
    bad["definition"]["nodes"][1]["on_failure"] = "ghost"
    invalid = await client.post(f"{API}/flows/import", headers=headers,
                                content=yaml.safe_dump_all([flow_doc(slug="fine"), bad]))
    assert (invalid.status_code, invalid.json()["code"]) == (422, "flow_invalid")
    assert invalid.json()["errors"] == [
        {"document": 2, "field": "definition.nodes.1.on_failure", "message": "'ghost' is not a node id"}]
    assert (await client.get(f"{API}/flows", headers=headers)).json() == []
    broken = await client.post(f"{API}/flows/import", headers=headers, content="slug: [unclosed\n")
    assert (broken.status_code, broken.json()["code"]) == (422, "yaml_invalid")
    big = await client.post(f"{API}/flows/import", headers=headers, content="#" * (MAX_YAML_BYTES + 1))
    assert (big.status_code, big.json()["code"]) == (413, "yaml_too_large")
    json_body = await client.post(f"{API}/flows/import", headers=tenant_a.headers(), json={"slug": "x"})
    assert (json_body.status_code, json_body.json()["code"]) == (415, "unsupported_media_type")


async def test_match_endpoint_sees_only_this_accounts_approved_flows(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    flow = await _approved_flow(client, tenant_a)
    await _create_flow(client, tenant_a, slug="draft-copy", name="Outlook password draft")
    request = {"text": "Outlook keeps asking for my password", "problem_domain": "m365"}
    matches = (await client.post(f"{API}/flows/match", json=request, headers=tenant_a.headers(Role.VIEWER))).json()
    assert [m["flow_id"] for m in matches] == [flow["id"]]
    assert matches[0]["score"] > 0.8
    assert matches[0]["reasons"]
    assert (await client.post(f"{API}/flows/match", json=request, headers=tenant_b.headers())).json() == []
    bad = await client.post(f"{API}/flows/match", json={"text": "", "problem_domain": "plumbing"},
                            headers=tenant_a.headers())
    assert {e["field"] for e in bad.json()["errors"]} == {"text", "problem_domain"}
    unchanged = (await client.get(f"{API}/flows/{flow['id']}", headers=tenant_a.headers())).json()
    assert unchanged["matched_count"] == 0  # matching through the API records nothing


async def test_script_templates(client: httpx.AsyncClient, tenant_a: Tenant) -> None:
    denied = await client.post(f"{API}/script-templates", json=template_doc(), headers=tenant_a.headers(Role.ENGINEER))
    assert denied.status_code == 403
    template = await _template(client, tenant_a)
    assert template["parameters"][1] == {"name": "force", "label": "Force", "type": "bool", "required": False,
                                         "default": False, "choices": [], "pattern": None}
    url = f"{API}/script-templates/{template['id']}"
    engineer = tenant_a.headers(Role.ENGINEER)
    rendered = await client.post(f"{url}/render", json={"params": {"username": "jdoe", "force": True}},
                                 headers=engineer)
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["script"].startswith("$User = 'jdoe'\n$Force = $true\n")
    bad = await client.post(f"{url}/render", json={"params": {"username": "j doe; rm"}}, headers=engineer)
    assert (bad.status_code, bad.json()["code"]) == (422, "template_param_invalid")
    assert bad.json()["errors"][0]["field"] == "params.username"
    assert (await client.post(f"{url}/render", json={"params": {}}, headers=tenant_a.headers(Role.VIEWER))
            ).status_code == 403
    assert (await client.get(url, headers=tenant_a.headers(Role.VIEWER))).json()["usage_count"] == 1
    invalid = await client.post(f"{API}/script-templates", headers=tenant_a.headers(Role.LEAD),
                                json=template_doc(slug="quoted", body='Write-Host "{{username}}"'))
    assert (invalid.status_code, invalid.json()["code"]) == (422, "template_invalid")
    patched = await client.patch(url, json={"description": "Unlocks.", "team_id": str(tenant_a.team_id)},
                                 headers=tenant_a.headers(Role.LEAD))
    assert (patched.json()["description"], patched.json()["team_id"]) == ("Unlocks.", str(tenant_a.team_id))
    assert (await client.patch(url, json={"name": "x"}, headers=engineer)).status_code == 403
    deleted = await client.delete(url, headers=tenant_a.headers(Role.LEAD))
    assert deleted.json()["is_active"] is False
    inactive = await client.post(f"{url}/render", json={"params": {"username": "jdoe"}}, headers=engineer)
    assert (inactive.status_code, inactive.json()["code"]) == (409, "template_inactive")
    listed = await client.get(f"{API}/script-templates", params={"active": "false"}, headers=engineer)
    assert [t["slug"] for t in listed.json()] == ["unlock-user"]


async def test_flows_are_invisible_to_other_accounts(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    flow = await _approved_flow(client, tenant_a)
    url = f"{API}/flows/{flow['id']}"
    owner, other = tenant_a.headers(), tenant_b.headers()
    await assert_invisible_to_other_account(client, url, owner_headers=owner, other_headers=other,
                                            methods=("GET", "PATCH", "DELETE"), json={"name": "hijacked"})
    await assert_invisible_to_other_account(client, f"{url}/versions", owner_headers=owner, other_headers=other)
    await assert_invisible_to_other_account(client, f"{url}/versions/1", owner_headers=owner, other_headers=other)
    for method, path in (("POST", f"{url}/approve"), ("GET", f"{url}/export")):
        response = await client.request(method, path, headers=other)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "flow_not_found"
    assert (await client.get(url, headers=owner)).json() == flow
    assert (await client.get(f"{API}/flows", headers=other)).json() == []


async def test_templates_are_invisible_to_other_accounts(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    template = await _template(client, tenant_a)
    url = f"{API}/script-templates/{template['id']}"
    await assert_invisible_to_other_account(client, url, owner_headers=tenant_a.headers(),
                                            other_headers=tenant_b.headers(), methods=("GET", "PATCH", "DELETE"),
                                            json={"description": "hijacked"})
    render = await client.post(f"{url}/render", json={"params": {"username": "x"}}, headers=tenant_b.headers())
    assert (render.status_code, render.json()["code"]) == (404, "template_not_found")
    assert (await client.get(url, headers=tenant_a.headers())).json()["usage_count"] == 0
    assert (await client.get(f"{API}/script-templates", headers=tenant_b.headers())).json() == []


async def test_flow_referencing_another_accounts_template_or_team_is_refused(
    client: httpx.AsyncClient, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    await _template(client, tenant_a)
    response = await client.post(f"{API}/flows", json=_body(definition=definition(template="unlock-user")),
                                 headers=tenant_b.headers())
    assert response.json()["code"] == "flow_invalid"
    team = await client.post(f"{API}/flows", json={**_body(), "team_id": str(tenant_a.team_id)},
                             headers=tenant_b.headers())
    assert (team.status_code, team.json()["code"]) == (404, "team_not_found")


async def test_openapi_names_operations_after_functions(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"list_flows", "create_flow", "import_flows", "match_flows", "get_flow", "update_flow", "archive_flow",
            "approve_flow", "list_flow_versions", "get_flow_version", "export_flow", "list_script_templates",
            "create_script_template", "get_script_template", "update_script_template", "deactivate_script_template",
            "render_script_template"} <= operations
    content = spec["paths"]["/api/v1/flows/import"]["post"]["requestBody"]["content"]
    assert "application/yaml" in content
    assert "text/plain" in content
