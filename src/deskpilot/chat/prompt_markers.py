"""The system-prompt section that teaches the chat model the marker blocks `markers.parse_reply` understands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from deskpilot.chat.events import MARKERS, MAX_ACTIONS, MAX_FORK_OPTIONS, MAX_QUESTIONS, MarkerName

_INTRO: Final = """\
## Structured blocks

Besides your answer, you may add blocks the console turns into buttons, panels and branches. A block is an \
opening tag on its own line, one JSON value, and the matching closing tag: `[NAME]` … `[/NAME]`. Tags are \
upper case, JSON uses double quotes, and blocks never go inside a code fence (a block inside ``` is shown to \
the engineer as text and ignored). The engineer never sees the blocks themselves, so say in your own words \
whatever they need to read. Leave out a block when you have nothing for it; a block that is not valid is \
dropped."""

# For each marker: what it is for, and an example the parser accepts (tests/chat/test_prompt_markers.py checks both).
MARKER_GUIDE: Final[Mapping[MarkerName, tuple[str, str]]] = {
    "FORK": (
        "Use `[FORK]` when the evidence fits two to "
        f"{MAX_FORK_OPTIONS} different causes about equally and each deserves its own line of investigation. "
        "Give a short `fork_reason` and the `options`, each with a `label` and a `description` of what that "
        "branch will check. Only the first `[FORK]` of a reply counts.",
        '[FORK]\n{"fork_reason": "Both the switch port and the NIC driver fit the symptoms", "options": ['
        '{"label": "Switch port", "description": "Check errors and speed negotiation on the port"}, '
        '{"label": "NIC driver", "description": "Check the driver version and power settings"}]}\n[/FORK]',
    ),
    "ACTIONS": (
        f"Use `[ACTIONS]` for up to {MAX_ACTIONS} things the engineer should do or run now: a JSON list of objects "
        "with a short imperative `label`, an optional `command` and an optional `description` of what to look "
        "for. Repeat an action that is still open with exactly the same label so it keeps its place in the "
        "task lane. Only the first `[ACTIONS]` of a reply counts.",
        '[ACTIONS]\n[{"label": "Check the DNS server setting", "command": "ipconfig /all", '
        '"description": "Look for the DNS servers listed for the active adapter"}]\n[/ACTIONS]',
    ),
    "QUESTIONS": (
        f"Use `[QUESTIONS]` for up to {MAX_QUESTIONS} questions you need answered: a JSON list of objects with the "
        "question `text` and an optional `context` saying why it matters. Repeat an open question with exactly "
        "the same text. Only the first `[QUESTIONS]` of a reply counts.",
        '[QUESTIONS]\n[{"text": "Does the problem affect every user at the site?", '
        '"context": "Tells a local fault from a service-wide one"}]\n[/QUESTIONS]',
    ),
    "PROMOTE": (
        "Use one `[PROMOTE]` block per fact that is now established, to add it to What we know: `source_type` is "
        "`question` (an answered question) or `diagnostic_check` (a finished action), with `source_ref` set to "
        "that task-lane item's id, or `ai_synthesis` (your own conclusion, no `source_ref`); `text` states the "
        "fact in one sentence and `summary` may say where it came from.",
        '[PROMOTE]\n{"source_type": "ai_synthesis", "text": "Only users on the guest VLAN are affected", '
        '"summary": "From the two answers about affected users"}\n[/PROMOTE]',
    ),
    "SUGGEST_FIX": (
        "Use `[SUGGEST_FIX]` when you believe you know the fix: `title` (a few words), `description` (what to do "
        "and why), `confidence` from 0 to 100, and optionally `script_template_slug` for a known script "
        "template, or `ai_drafted_script` with `ai_drafted_parameters` (an object). A new suggestion replaces "
        "the previous one; only the last `[SUGGEST_FIX]` of a reply counts.",
        '[SUGGEST_FIX]\n{"title": "Renew the DHCP lease", "description": "The adapter kept a stale lease from '
        'the old scope; release and renew it.", "confidence": 80, "ai_drafted_script": "ipconfig /release\\n'
        'ipconfig /renew", "ai_drafted_parameters": {}}\n[/SUGGEST_FIX]',
    ),
    "FIX_OUTCOME": (
        "Use `[FIX_OUTCOME]` only after the engineer has said how a suggested fix went: `fix_id` is the id of "
        "that fix, `outcome` is `success`, `failure` or `partial`, and `reason` is one line. It is a proposal "
        "the engineer confirms; only the last `[FIX_OUTCOME]` of a reply counts.",
        '[FIX_OUTCOME]\n{"fix_id": "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", "outcome": "success", '
        '"reason": "The engineer confirmed the share maps again after the renewal"}\n[/FIX_OUTCOME]',
    ),
}


def marker_prompt() -> str:
    """The section, one paragraph and one example per marker in the parser's order."""
    sections = [_INTRO]
    for name in MARKERS:
        paragraph, example = MARKER_GUIDE[name]
        sections.append(f"### `[{name}]`\n\n{paragraph}\n\n{example}")
    return "\n\n".join(sections) + "\n"


MARKER_PROMPT: Final = marker_prompt()
