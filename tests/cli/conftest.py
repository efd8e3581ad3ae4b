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
