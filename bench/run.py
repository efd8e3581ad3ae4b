"""Run every benchmark, print its table and append it to BENCHMARKS.md with the command that made it."""

from __future__ import annotations

import argparse
import importlib
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

BENCHMARKS = ("bench.bench_llm", "bench.bench_jobs", "bench.bench_pilot", "bench.bench_markers", "bench.bench_chat")
RESULTS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_no rows_\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        ).stdout.strip()
    except OSError:
        commit = "?"
    cpus = len(Path("/proc/cpuinfo").read_text().split("processor")) - 1 if Path("/proc/cpuinfo").exists() else 0
    return f"Python {platform.python_version()}, {platform.machine()}, {cpus} CPUs, commit {commit or '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    selected = [n if n.startswith("bench.") else f"bench.{n}" for n in args.names] or list(BENCHMARKS)
    sections = []
    for name in selected:
        module: ModuleType = importlib.import_module(name)
        print(f"== {module.TITLE}", flush=True)
        rows = module.run(quick=args.quick)
        table = markdown_table(rows)
        print(table, flush=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        sections.append(f"### {module.TITLE}\n\n{stamp} · {_machine()}\n\nCommand: `{module.COMMAND}`\n\n{table}")
    if not args.no_write and not args.quick:
        header = "" if RESULTS.exists() else "# Benchmarks\n\nFigures appended by `make bench`; newest last.\n"
        with RESULTS.open("a") as out:
            out.write(header + "\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
