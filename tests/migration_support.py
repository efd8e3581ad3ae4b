"""Helpers for tests of hand-written migrations: load a revision file, list the search structures present."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from sqlalchemy import inspect

from deskpilot.storage import Database

VERSIONS = Path(__file__).resolve().parents[1] / "migrations" / "versions"


def load_revision(filename: str) -> ModuleType:
    """Import a revision file by name (the versions folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"revision_{Path(filename).stem}", VERSIONS / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def search_structures(db: Database, table: str, is_search_structure: Callable[[str, str], bool]) -> set[str]:
    """The tables and `table`'s indexes that `is_search_structure` claims, as the database has them now."""

    def read(conn: object) -> set[str]:
        insp = inspect(conn)
        names = set(insp.get_table_names())
        if table in names:
            names |= {i["name"] for i in insp.get_indexes(table) if i["name"]}
        return {n for n in names if is_search_structure(n, "table") or is_search_structure(n, "index")}

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)
