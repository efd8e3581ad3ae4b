"""Shared fixtures of the CLI tests: the demo account loaded once per module."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from deskpilot.cli.sample_data import load_sample_data
from deskpilot.security import passwords
from deskpilot.storage import Database
from tests.conftest import cheap_hasher


@pytest.fixture(scope="module")
def demo_template(migrated_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo account (lead, engineers, clients, starter flows and scripts) loaded once per module."""
    path = tmp_path_factory.mktemp("pilot") / "demo.db"
    shutil.copyfile(migrated_template, path)

    async def load() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await load_sample_data(db)
        finally:
            await db.dispose()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passwords, "_hasher", cheap_hasher())
        asyncio.run(load())
    return path


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings pointing at a file that does not exist yet; no LLM configured."""
    path = tmp_path / "deskpilot.db"
    monkeypatch.setenv("DESKPILOT_DATABASE__URL", f"sqlite+aiosqlite:///{path}")
    for name in ("DEFAULT_MODEL", "OPENAI__BASE_URL", "OPENAI__API_KEY", "ROUTES"):
        monkeypatch.delenv(f"DESKPILOT_LLM__{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def demo(db_path: Path, demo_template: Path) -> Path:
    shutil.copyfile(demo_template, db_path)
    return db_path
