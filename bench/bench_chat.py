"""Chat copilot (issue #4): server-added time to the first streamed token, and one turn with a zero-latency model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import _chat_ttft, _chat_turn

TITLE = "Chat: server-added time to first token over HTTP, and one turn in process (zero-latency model)"
COMMAND = ".venv/bin/python -m bench.run bench_chat"


def run(quick: bool = False) -> list[dict[str, str]]:
    """Both measurements in one table: time to first token (fake model vs through deskpilot), then the turn."""
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        folder = Path(tmp)
        if quick:
            rows = _chat_ttft.measure(folder, rounds=1, pairs=10, turns=5, warmup=10)
            rows += _chat_turn.measure(folder, rounds=1, chats=2, turns=3, postgres=False)
        else:
            rows = _chat_ttft.measure(folder, rounds=5, pairs=60, turns=10, warmup=40)
            rows += _chat_turn.measure(folder, rounds=5, chats=4, turns=10)
    return rows


if __name__ == "__main__":
    import argparse

    from bench.run import markdown_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of both measurements")
    print(markdown_table(run(quick=parser.parse_args().quick)))
