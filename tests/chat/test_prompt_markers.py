"""The system prompt documents every marker the parser knows, with an example the parser accepts."""

from __future__ import annotations

import pytest

from deskpilot.chat.events import MARKERS, event_marker
from deskpilot.chat.markers import parse_reply
from deskpilot.chat.prompt_markers import MARKER_GUIDE, MARKER_PROMPT


@pytest.mark.parametrize("name", MARKERS)
def test_prompt_documents_every_marker(name: str) -> None:
    assert f"### `[{name}]`" in MARKER_PROMPT
    assert f"[{name}]\n" in MARKER_PROMPT
    assert f"\n[/{name}]" in MARKER_PROMPT


def test_guide_covers_exactly_the_parser_markers() -> None:
    assert set(MARKER_GUIDE) == set(MARKERS)


@pytest.mark.parametrize("name", MARKERS)
def test_each_example_parses_to_its_event_and_leaves_no_text(name: str) -> None:
    _, example = MARKER_GUIDE[name]
    reply = parse_reply(example)
    assert reply.problems == ()
    assert [event_marker(e) for e in reply.events] == [name]
    assert reply.visible == ""


def test_the_whole_prompt_parses_cleanly() -> None:
    reply = parse_reply(MARKER_PROMPT)
    assert reply.problems == ()
    assert [event_marker(e) for e in reply.events] == list(MARKERS)
