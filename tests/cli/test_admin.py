"""The admin CLI: bootstrap, add users, create and revoke tokens against a migrated SQLite file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deskpilot import __version__
from deskpilot.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "cli.db"
    monkeypatch.setenv("DESKPILOT_DATABASE__URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    return db


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_bootstrap_user_and_tokens(env: Path) -> None:
    boot = runner.invoke(app, ["admin", "bootstrap", "--account", "Acme IT", "--email", "o@acme.example",
                               "--name", "Olga", "--password", "correct-horse-battery"])
    assert boot.exit_code == 0, boot.output
    assert re.search(r"dp_[A-Za-z0-9_-]{20,}", boot.output)

    added = runner.invoke(app, ["admin", "user", "add", "--account", "acme-it", "--email", "e@acme.example",
                                "--name", "Eli", "--role", "engineer", "--team", "Desk", "--no-password"])
    assert added.exit_code == 0, added.output
    duplicate = runner.invoke(app, ["admin", "user", "add", "--account", "acme-it", "--email", "e@acme.example",
                                    "--name", "Eli", "--no-password"])
    assert duplicate.exit_code == 1
    assert "email_taken" in duplicate.output

    created = runner.invoke(app, ["admin", "token", "create", "--email", "e@acme.example", "--name", "script"])
    assert created.exit_code == 0, created.output
    token_id = re.search(r"token ([0-9a-f-]{36})", created.output)
    assert token_id
    revoked = runner.invoke(app, ["admin", "token", "revoke", token_id.group(1)])
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(app, ["admin", "token", "list", "--account", "acme-it"])
    assert "script" in listed.output


def test_errors_are_readable(env: Path) -> None:
    bad_role = runner.invoke(app, ["admin", "user", "add", "--account", "nope", "--email", "x@y.example",
                                   "--name", "X", "--role", "emperor", "--no-password"])
    assert bad_role.exit_code == 2
    assert "unknown role" in bad_role.output
    missing = runner.invoke(app, ["admin", "user", "add", "--account", "nope", "--email", "x@y.example",
                                  "--name", "X", "--no-password"])
    assert missing.exit_code == 1
    assert "no account" in missing.output
    revoke = runner.invoke(app, ["admin", "token", "revoke", "not-a-uuid"])
    assert revoke.exit_code == 1


def test_demo_loads_sample_data_once(env: Path) -> None:
    first = runner.invoke(app, ["demo", "--no-serve"])
    assert first.exit_code == 0, first.output
    assert "lead@northwind.example" in first.output
    assert "deskpilot-demo" in first.output
    second = runner.invoke(app, ["demo", "--no-serve"])
    assert second.exit_code == 0
    assert "shown once" not in second.output
