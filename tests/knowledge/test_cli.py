"""`deskpilot knowledge`: import, export and list flows, list templates, load the starter library."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deskpilot.cli.knowledge import knowledge_app
from deskpilot.storage import Database, migrations
from tests.knowledge.conftest import make_account
from tests.knowledge.flows import definition, flow_doc

runner = CliRunner()


@pytest.fixture
def account_slug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DESKPILOT_DATABASE__URL", url)
    monkeypatch.chdir(tmp_path)

    async def prepare() -> None:
        await asyncio.to_thread(migrations.upgrade, url)
        db = Database(url)
        try:
            await make_account(db, "Acme IT")
        finally:
            await db.dispose()

    asyncio.run(prepare())
    return "acme-it"


def test_import_list_export_round_trip(account_slug: str, tmp_path: Path) -> None:
    source = tmp_path / "flows.yaml"
    source.write_text(yaml.safe_dump_all([flow_doc(slug="one"), flow_doc(slug="two", name="Second")]))
    imported = runner.invoke(knowledge_app, ["flows", "import", str(source), "--account", account_slug, "--approve"])
    assert imported.exit_code == 0, imported.output
    assert "created   one (version 1" in imported.output
    listed = runner.invoke(knowledge_app, ["flows", "list", "--account", account_slug, "--status", "approved"])
    assert listed.exit_code == 0, listed.output
    assert "one" in listed.output
    assert "Second" in listed.output
    out = tmp_path / "out.yaml"
    exported = runner.invoke(knowledge_app, ["flows", "export", "--account", account_slug, "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    again = runner.invoke(knowledge_app, ["flows", "import", str(out), "--account", account_slug, "--replace"])
    assert again.exit_code == 0, again.output
    assert again.output.count("unchanged") == 2
    one = runner.invoke(knowledge_app, ["flows", "export", "--account", account_slug, "--slug", "two"])
    assert [d["slug"] for d in yaml.safe_load_all(one.output) if d] == ["two"]
    missing = runner.invoke(knowledge_app, ["flows", "export", "--account", account_slug, "--slug", "nope"])
    assert missing.exit_code == 1
    assert "not_found" in missing.output


def test_errors_name_document_and_field(account_slug: str, tmp_path: Path) -> None:
    broken = flow_doc(slug="bad", definition=definition())
    broken["definition"]["nodes"][1]["on_success"] = "ghost"
    source = tmp_path / "bad.yaml"
    source.write_text(yaml.safe_dump_all([flow_doc(slug="good"), broken]))
    result = runner.invoke(knowledge_app, ["flows", "import", str(source), "--account", account_slug])
    assert result.exit_code == 1
    assert "flow_invalid" in result.output
    assert "document 2: definition.nodes.1.on_success: 'ghost' is not a node id" in result.output
    unknown = runner.invoke(knowledge_app, ["flows", "list", "--account", "nobody"])
    assert unknown.exit_code == 1
    assert "no account with id or slug 'nobody'" in unknown.output


def test_starter_library_and_templates(account_slug: str) -> None:
    loaded = runner.invoke(knowledge_app, ["load-starter", "--account", account_slug])
    assert loaded.exit_code == 0, loaded.output
    assert "script template(s)" in loaded.output
    again = runner.invoke(knowledge_app, ["load-starter", "--account", account_slug])
    assert "added 0 flow(s) and 0 script template(s)" in again.output
    templates = runner.invoke(knowledge_app, ["templates", "list", "--account", account_slug])
    assert templates.exit_code == 0, templates.output
    assert "ad-unlock-account" in templates.output
