"""The knowledge service on SQLite and PostgreSQL: flows, versions, import, matching, statistics, templates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from deskpilot.errors import NotFound
from deskpilot.knowledge import service as knowledge
from deskpilot.knowledge import yaml_io
from deskpilot.knowledge.errors import (
    FlowInvalid,
    FlowNotFound,
    FlowSlugTaken,
    FlowVersionNotFound,
    TemplateInactive,
    TemplateInvalid,
    TemplateNotFound,
    TemplateParamInvalid,
    TemplateSlugTaken,
)
from deskpilot.knowledge.models import (
    Flow,
    FlowSource,
    FlowStatus,
    ProblemDomain,
    ScriptLanguage,
    ScriptTemplate,
)
from deskpilot.knowledge.schemas import parse_definition, parse_flow_document, parse_template_document
from deskpilot.storage import Database, utcnow
from tests.knowledge.conftest import Account
from tests.knowledge.flows import definition, flow_doc, template_doc


async def _flow(db: Database, account: Account, *, status: FlowStatus = FlowStatus.APPROVED, **doc: Any) -> Flow:
    async with db.session(account.id) as session:
        flow = await knowledge.create_flow(session, account_id=account.id, status=status, created_by=account.lead_id,
                                           document=parse_flow_document(flow_doc(**doc)))
        await session.commit()
        return flow


async def test_create_get_and_list(db: Database, account: Account) -> None:
    flow = await _flow(db, account, status=FlowStatus.DRAFT)
    async with db.session(account.id) as session:
        loaded = await knowledge.get_flow(session, flow.id)
        assert (loaded.version, loaded.status, loaded.source) == (1, FlowStatus.DRAFT, FlowSource.USER)
        assert loaded.definition == parse_flow_document(flow_doc()).canonical_definition()
        assert "Credential Manager" in loaded.search_body
        assert "credentials" in loaded.search_keywords
        assert [v.version for v in await knowledge.list_flow_versions(session, flow.id)] == [1]
        assert await knowledge.list_flows(session, status=FlowStatus.APPROVED) == []
        assert [f.id for f in await knowledge.list_flows(session, problem_domain=ProblemDomain.M365)] == [flow.id]
        assert (await knowledge.get_flow_definition(session, flow.id)).start == "scope"
        with pytest.raises(FlowSlugTaken):
            await knowledge.create_flow(session, account_id=account.id, document=parse_flow_document(flow_doc()))
        with pytest.raises(FlowNotFound):
            await knowledge.get_flow(session, account.team_id)


async def test_definition_changes_make_versions(db: Database, account: Account) -> None:
    flow = await _flow(db, account)
    changed = definition()
    changed["nodes"][2]["text"] = "Stale credentials removed; profile rebuilt."
    async with db.session(account.id) as session:
        renamed = await knowledge.update_flow(session, flow.id, name="Outlook prompts", tags=["outlook"],
                                              updated_by=account.lead_id)
        assert renamed.version == 1  # metadata is not versioned
        same = await knowledge.update_flow(session, flow.id, definition=parse_definition(definition()))
        assert same.version == 1
        bumped = await knowledge.update_flow(session, flow.id, definition=parse_definition(changed),
                                             updated_by=account.lead_id, team_id=account.team_id)
        assert (bumped.version, bumped.team_id) == (2, account.team_id)
        assert "profile rebuilt" in bumped.search_body
        await session.commit()
    async with db.session(account.id) as session:
        versions = await knowledge.list_flow_versions(session, flow.id)
        assert [v.version for v in versions] == [2, 1]
        first = await knowledge.get_flow_version(session, flow.id, 1)
        assert first.definition["nodes"][2]["text"] == "Stale credentials removed."
        assert first.name == "Outlook keeps asking for a password"
        with pytest.raises(FlowVersionNotFound):
            await knowledge.get_flow_version(session, flow.id, 3)
        cleared = await knowledge.update_flow(session, flow.id, clear_team=True, slug="outlook-prompts-v2")
        assert (cleared.team_id, cleared.slug) == (None, "outlook-prompts-v2")


async def test_template_references_are_checked(db: Database, account: Account) -> None:
    async with db.session(account.id) as session:
        await knowledge.create_template(session, account_id=account.id,
                                        document=parse_template_document(template_doc()))
        ok = flow_doc(definition=definition(template="unlock-user", params={"force": True}))
        await knowledge.create_flow(session, account_id=account.id, document=parse_flow_document(ok))
        bad = [
            (definition(template="nope"), "definition.nodes.1.script_template"),
            (definition(template="unlock-user", params={"colour": "red"}), "definition.nodes.1.default_params.colour"),
            (definition(template="unlock-user", params={"force": "maybe"}), "definition.nodes.1.default_params.force"),
        ]
        for i, (data, field) in enumerate(bad):
            with pytest.raises(FlowInvalid) as exc:
                await knowledge.create_flow(session, account_id=account.id,
                                            document=parse_flow_document(flow_doc(slug=f"bad-{i}", definition=data)))
            assert [e["field"] for e in exc.value.extra["errors"]] == [field]


async def test_approve_archive_and_team_checks(db: Database, account: Account, other_account: Account) -> None:
    flow = await _flow(db, account, status=FlowStatus.DRAFT)
    async with db.session(account.id) as session:
        approved = await knowledge.approve_flow(session, flow.id, approved_by=account.lead_id)
        assert (approved.status, approved.approved_by) == (FlowStatus.APPROVED, account.lead_id)
        assert approved.approved_at is not None
        assert (await knowledge.archive_flow(session, flow.id)).status is FlowStatus.ARCHIVED
        assert (await knowledge.archive_flow(session, flow.id)).status is FlowStatus.ARCHIVED
        with pytest.raises(NotFound) as exc:
            await knowledge.update_flow(session, flow.id, team_id=other_account.team_id)
        assert exc.value.code == "team_not_found"
    async with db.system_session() as session:
        with pytest.raises(NotFound):
            await knowledge.create_flow(session, account_id=account.id, team_id=other_account.team_id,
                                        document=parse_flow_document(flow_doc(slug="x")))


async def test_import_creates_replaces_and_is_all_or_nothing(db: Database, account: Account) -> None:
    stream = yaml_io.flows_to_yaml([parse_flow_document(flow_doc(slug=f"f{i}", name=f"Flow {i}")) for i in range(2)])
    async with db.session(account.id) as session:
        first = await knowledge.import_flows_yaml(session, account_id=account.id, text=stream)
        assert [(r.slug, r.action, r.version) for r in first] == [("f0", "created", 1), ("f1", "created", 1)]
        await session.commit()
    changed = flow_doc(slug="f1", name="Flow 1")
    changed["definition"]["nodes"][2]["text"] = "Different fix."
    replacement = yaml_io.flows_to_yaml([parse_flow_document(flow_doc(slug="f0", name="Flow 0")),
                                         parse_flow_document(changed),
                                         parse_flow_document(flow_doc(slug="f2", name="Flow 2"))])
    async with db.session(account.id) as session:
        with pytest.raises(FlowSlugTaken) as exc:
            await knowledge.import_flows_yaml(session, account_id=account.id, text=replacement)
        assert [e["document"] for e in exc.value.extra["errors"]] == [1, 2]
        broken = flow_doc(slug="f3", definition=definition(template="missing"))
        with pytest.raises(FlowInvalid) as invalid:
            await knowledge.import_flows(session, account_id=account.id,
                                         documents=[parse_flow_document(flow_doc(slug="f4")),
                                                    parse_flow_document(broken)])
        assert invalid.value.extra["errors"][0]["document"] == 2
        assert await session.scalar(select(func.count()).select_from(Flow)) == 2
        second = await knowledge.import_flows_yaml(session, account_id=account.id, text=replacement, replace=True)
        assert [(r.slug, r.action, r.version) for r in second] == [
            ("f0", "unchanged", 1), ("f1", "updated", 2), ("f2", "created", 1)]


async def test_export_round_trips_between_accounts(db: Database, account: Account, other_account: Account) -> None:
    flow = await _flow(db, account)
    async with db.session(account.id) as session:
        exported = await knowledge.export_flow(session, flow.id)
    async with db.session(other_account.id) as session:
        (imported,) = await knowledge.import_flows_yaml(session, account_id=other_account.id, text=exported)
        await session.commit()
    async with db.session(other_account.id) as session:
        assert await knowledge.export_flow(session, imported.id) == exported


async def test_matching_ranks_approved_flows_of_this_account(
    db: Database, account: Account, other_account: Account
) -> None:
    outlook = await _flow(db, account)
    await _flow(db, account, status=FlowStatus.DRAFT, slug="draft-outlook")
    printer = await _flow(db, account, slug="printer", name="Printer jobs stuck in the queue",
                          problem_domain="printing", tags=["printer", "spooler"], symptoms=["print jobs stuck"],
                          description="Spooler.")
    team_only = await _flow(db, account, slug="team-outlook", name="Outlook password prompts for the projects team",
                            problem_domain="m365")
    async with db.session(account.id) as session:
        await knowledge.update_flow(session, team_only.id, team_id=account.other_team_id)
        await session.commit()
    await _flow(db, other_account, slug="theirs", name="Outlook keeps asking for a password (theirs)")
    async with db.session(account.id) as session:
        matches = await knowledge.find_matches(session, account.id, "Outlook keeps asking for my password", "m365",
                                               team_id=account.team_id)
        assert [m.flow_id for m in matches][:1] == [outlook.id]
        assert matches[0].score > 0.8
        assert {m.flow_id for m in matches} <= {outlook.id, printer.id}
        assert all(0 <= m.score <= 1 and m.reasons for m in matches)
        everything = await knowledge.find_matches(session, account.id, "Outlook password", ProblemDomain.M365)
        assert team_only.id in {m.flow_id for m in everything}
        assert "theirs" not in " ".join(m.name for m in everything)
        printing = await knowledge.find_matches(session, account.id, "print jobs stuck in the spooler", "plumbing")
        assert printing[0].flow_id == printer.id
        assert "no specific problem domain given" in printing[0].reasons
        assert await knowledge.find_matches(session, account.id, "the of and", None) == []
        assert len(await knowledge.find_matches(session, account.id, "outlook", None, limit=1)) == 1


async def test_matching_follows_renames(db: Database, account: Account) -> None:
    flow = await _flow(db, account)
    async with db.session(account.id) as session:
        await knowledge.update_flow(session, flow.id, name="Kerberos ticket renewal", tags=["kerberos"],
                                    symptoms=["kerberos errors"], description="Tickets.",
                                    definition=parse_definition(definition()))
        await session.commit()
    async with db.session(account.id) as session:
        assert [m.flow_id for m in await knowledge.find_matches(session, account.id, "kerberos", None)] == [flow.id]
        # "password" was only in the old name, tags and symptoms: the index forgot them.
        assert await knowledge.find_matches(session, account.id, "password", None) == []


async def test_usage_statistics(db: Database, account: Account) -> None:
    flow = await _flow(db, account)
    before = utcnow()
    async with db.session(account.id) as session:
        loaded = await knowledge.get_flow(session, flow.id)
        assert loaded.success_rate is None
        for _ in range(3):
            await knowledge.record_match(session, flow.id)
        await knowledge.record_outcome(session, flow.id, resolved=True)
        await knowledge.record_outcome(session, flow.id, resolved=True)
        await knowledge.record_outcome(session, flow.id, resolved=False)
        # The flow loaded earlier in this session shows the new numbers.
        assert (loaded.usage_count, loaded.matched_count, loaded.resolved_count) == (3, 3, 2)
        assert loaded.success_rate == 0.667
        assert loaded.last_matched_at is not None
        assert loaded.last_matched_at >= before - timedelta(seconds=1)
        assert loaded.updated_at == flow.updated_at
        await session.commit()
    async with db.session(account.id) as session:
        assert (await knowledge.get_flow(session, flow.id)).success_rate == 0.667
        with pytest.raises(FlowNotFound):
            await knowledge.record_match(session, account.team_id)


async def test_statistics_cannot_touch_another_account(db: Database, account: Account, other_account: Account) -> None:
    flow = await _flow(db, account)
    async with db.session(other_account.id) as session:
        with pytest.raises(FlowNotFound):
            await knowledge.record_match(session, flow.id)
        with pytest.raises(FlowNotFound):
            await knowledge.record_outcome(session, flow.id, resolved=True)
        with pytest.raises(FlowNotFound):
            await knowledge.get_flow(session, flow.id)
    async with db.session(account.id) as session:
        assert (await knowledge.get_flow(session, flow.id)).matched_count == 0


async def test_templates_crud_render_and_usage(db: Database, account: Account) -> None:
    async with db.session(account.id) as session:
        template = await knowledge.create_template(session, account_id=account.id, created_by=account.lead_id,
                                                   document=parse_template_document(template_doc()))
        with pytest.raises(TemplateSlugTaken):
            await knowledge.create_template(session, account_id=account.id,
                                            document=parse_template_document(template_doc()))
        rendered = await knowledge.render_template(session, template.id, {"username": "o.brien"})
        assert rendered.script.splitlines()[:2] == ["$User = 'o.brien'", "$Force = $false"]
        assert rendered.params == {"username": "o.brien", "force": False}
        with pytest.raises(TemplateParamInvalid):
            await knowledge.render_template(session, template.id, {"username": "a b"})
        await knowledge.record_template_use(session, template.id)
        assert template.usage_count == 1
        updated = await knowledge.update_template(session, template.id, language=ScriptLanguage.BASH,
                                                  body="user={{username}}\n", team_id=account.team_id)
        assert (updated.language, updated.team_id) == ("bash", account.team_id)
        with pytest.raises(TemplateInvalid):
            await knowledge.update_template(session, template.id, body='echo "{{username}}"')
        with pytest.raises(TemplateInvalid):
            await knowledge.update_template(session, template.id, parameters=[{"name": "other", "label": "O"}])
        await knowledge.create_template(session, account_id=account.id,
                                        document=parse_template_document(template_doc(slug="second")))
        with pytest.raises(TemplateSlugTaken):
            await knowledge.update_template(session, template.id, slug="second")
        await knowledge.deactivate_template(session, template.id)
        with pytest.raises(TemplateInactive):
            await knowledge.render_template(session, template.id, {"username": "bob"})
        with pytest.raises(TemplateNotFound):
            await knowledge.get_template(session, account.team_id)
        with pytest.raises(TemplateNotFound):
            await knowledge.record_template_use(session, account.team_id)
        assert [t.slug for t in await knowledge.list_templates(session, active=True)] == ["second"]


async def test_top_templates_for_prompt(db: Database, account: Account) -> None:
    async with db.session(account.id) as session:
        made: dict[str, ScriptTemplate] = {}
        for slug, team, uses in [("everyone", None, 5), ("mine", account.team_id, 9),
                                 ("theirs", account.other_team_id, 20), ("unused", None, 0), ("retired", None, 50)]:
            made[slug] = await knowledge.create_template(session, account_id=account.id, team_id=team,
                                                         document=parse_template_document(template_doc(slug=slug)))
            for _ in range(uses):
                await knowledge.record_template_use(session, made[slug].id)
        await knowledge.deactivate_template(session, made["retired"].id)
        mine = await knowledge.top_templates_for_prompt(session, account.team_id)
        assert [t.slug for t in mine] == ["mine", "everyone", "unused"]
        assert mine[0].parameters == ["username", "force"]
        assert [t.slug for t in await knowledge.top_templates_for_prompt(session, None)] == ["everyone", "unused"]
        assert len(await knowledge.top_templates_for_prompt(session, account.team_id, limit=1)) == 1
        block = knowledge.format_templates_for_prompt(mine)
        assert f"(ID: {made['mine'].id}, slug: mine, powershell)" in block


async def test_starter_library_loads_once(db: Database, account: Account) -> None:
    async with db.session(account.id) as session:
        first = await knowledge.load_starter_library(session, account.id)
        await session.commit()
    assert first.flows_created >= 25
    assert first.templates_created >= 12
    async with db.system_session() as session:
        again = await knowledge.load_starter_library(session, account.id)
        assert (again.flows_created, again.templates_created) == (0, 0)
    async with db.session(account.id) as session:
        flows = await knowledge.list_flows(session, status=FlowStatus.APPROVED, source=FlowSource.STARTER)
        assert len(flows) == first.flows_created
        lockout = await knowledge.find_matches(session, account.id, "user account keeps getting locked out",
                                               "active_directory")
        assert lockout[0].name.startswith("Active Directory account keeps getting locked out")
        assert lockout[0].score > 0.8
