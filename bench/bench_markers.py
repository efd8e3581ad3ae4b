"""Chat marker parser: throughput and linearity on normal and adversarial replies of 1 KB, 100 KB and 1 MB."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from functools import partial

from deskpilot.chat.markers import parse_reply

TITLE = "Chat marker parser: p50 per reply size, MB/s, and time(1 MB)/time(100 KB) (10 = linear)"
COMMAND = ".venv/bin/python -m bench.bench_markers"

SIZES = (("1 KB", 1_000), ("100 KB", 100_000), ("1 MB", 1_000_000))

_NORMAL_UNIT = (
    "The VPN drops for users on the guest VLAN only, which points at the DHCP scope rather than the gateway. "
    "See [the runbook](https://example.invalid/vpn) and check the lease table:\n\n"
    "```powershell\nGet-DhcpServerv4Lease -ScopeId 10.20.0.0 | Where-Object AddressState -eq 'Active'\n```\n\n"
    "[QUESTIONS]\n"
    + json.dumps([{"text": "Does it happen at a fixed interval?", "context": "Rekey versus roaming"}])
    + "\n[/QUESTIONS]\n[ACTIONS]\n```json\n"
    + json.dumps([{"label": "Check the scope", "command": "netsh dhcp show scope", "description": "Free addresses"}])
    + "\n```\n[/ACTIONS]\n[PROMOTE]\n"
    + json.dumps({"source_type": "ai_synthesis", "text": "Only guest VLAN users are affected", "summary": "answers"})
    + "\n[/PROMOTE]\n\n"
)
# Unclosed tags whose bodies are cut off, between lines of prose.
_UNCLOSED_UNIT = 'Still checking the gateway logs for the session drops.\n[ACTIONS]\n[{"label": "Restart the ser\n'
# Fences in fences, with marker-like text inside that must stay text.
_FENCES_UNIT = '````markdown\n```json\n[FORK]\n{"options": [{"label": "a"}, {"label": "b"}]}\n[/FORK]\n```\n````\n'
# Nothing but tags: complete empty blocks, stray closes and unclosed opens (about 10,000 tags per 200 KB).
_TAGS_UNIT = "[PROMOTE]{}[/PROMOTE][/FORK][QUESTIONS]"

KINDS: dict[str, str] = {
    "normal": _NORMAL_UNIT,
    "adversarial: unclosed tags": _UNCLOSED_UNIT,
    "adversarial: nested fences": _FENCES_UNIT,
    "adversarial: tag storm": _TAGS_UNIT,
}


def reply(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def p50(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for kind, unit in KINDS.items():
        by_size: dict[str, float] = {}
        for label, size in SIZES:
            text = reply(unit, size)
            repeat = 3 if quick else (7 if size >= 1_000_000 else 25)
            by_size[label] = seconds = p50(partial(parse_reply, text), repeat)
            tags = sum(text.count(f"[{c}") for c in "FAQPS/")
            rows.append(
                {
                    "reply": kind,
                    "size": label,
                    "tags": str(tags),
                    "p50 ms": f"{seconds * 1000:.2f}",
                    "MB/s": f"{size / seconds / 1e6:.0f}",
                    "1 MB / 100 KB": f"{by_size['1 MB'] / by_size['100 KB']:.1f}" if label == "1 MB" else "",
                }
            )
    return rows


if __name__ == "__main__":
    from bench.run import markdown_table

    print(markdown_table(run()))
