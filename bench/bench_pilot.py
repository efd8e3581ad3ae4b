"""Pilot: one durable guided turn against LangGraph, storage per session, and capacity over HTTP."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bench import _pilot_capacity, _pilot_storage, _pilot_turn

TITLE = "Pilot: durable guided turn vs LangGraph, storage per session, capacity over HTTP"
COMMAND = ".venv/bin/python -m bench.run bench_pilot"


def run(quick: bool = False) -> list[dict[str, str]]:
    """All three measurements in one table: the turn (SQLite, PostgreSQL, LangGraph), storage, capacity."""
    with tempfile.TemporaryDirectory(prefix="bench-pilot-") as tmp:
        folder = Path(tmp)
        if quick:
            rows = asyncio.run(_pilot_turn.measure(folder, rounds=2, sessions=3, turns=4))
            rows += asyncio.run(_pilot_storage.measure(folder, sessions=1))
            rows += _pilot_capacity.measure(folder, levels=(3,), turns=1, delay_s=0.5)
        else:
            rows = asyncio.run(_pilot_turn.measure(folder, rounds=5, sessions=20, turns=10))
            rows += asyncio.run(_pilot_storage.measure(folder, sessions=5))
            rows += _pilot_capacity.measure(folder, levels=(10, 25, 50, 100, 150, 200, 250, 300), turns=5, delay_s=1.0)
            # The same load on two server processes: what `deskpilot serve --workers 2` adds on these 2 cores.
            rows += _pilot_capacity.measure(folder / "workers", levels=(150, 300), turns=5, delay_s=1.0, workers=2)
    return rows


if __name__ == "__main__":
    import argparse

    from bench.run import markdown_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of every measurement (about 30 s)")
    print(markdown_table(run(quick=parser.parse_args().quick)))
