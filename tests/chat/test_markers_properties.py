"""Property-based tests of the marker parser: total, stripping, idempotent, streaming-safe."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from deskpilot.chat.events import MARKERS
from deskpilot.chat.markers import parse_reply, visible_prefix

SETTINGS = settings(max_examples=150, deadline=None)

TAGS = [f"[{m}]" for m in MARKERS] + [f"[/{m}]" for m in MARKERS] + ["[actions]", "[/Fork]"]
PAYLOADS = [
    json.dumps([{"label": "x"}]),
    json.dumps([{"text": "q"}]),
    json.dumps({"options": [{"label": "a"}, {"label": "b"}]}),
    json.dumps({"source_type": "ai_synthesis", "text": "t"}),
    json.dumps({"title": "t", "description": "d", "confidence": 5}),
    "{",
    "[",
    "```json\n[]\n```",
]
# Fragments that look like replies: prose, tags, JSON, fences, brackets, whitespace.
FRAGMENTS = st.one_of(
    st.sampled_from(TAGS),
    st.sampled_from(PAYLOADS),
    st.sampled_from(["```", "```json", "~~~", "`", "\n", "\n\n", "  ", "[", "]", "[/", "{", '"', "[ACT", "x"]),
    st.text(alphabet="ab []{}`~/\n", max_size=8),
)
REPLIES = st.lists(FRAGMENTS, max_size=30).map("".join)
PROSE = st.text(alphabet=st.characters(blacklist_characters="[]`~", blacklist_categories=("Cs",)), max_size=40)


@SETTINGS
@given(st.one_of(REPLIES, st.text(max_size=200)))
def test_parse_never_raises_and_reparsing_the_visible_text_finds_nothing(text: str) -> None:
    reply = parse_reply(text)
    again = parse_reply(reply.visible)
    assert again.events == ()
    assert again.problems == ()
    assert again.visible == reply.visible


@SETTINGS
@given(REPLIES)
def test_visible_text_holds_no_complete_block_outside_code(text: str) -> None:
    visible = parse_reply(text).visible
    if "`" in text or "~" in text:
        return
    upper = visible.upper()
    for name in MARKERS:
        assert f"[{name}]" not in upper
        assert f"[/{name}]" not in upper


@SETTINGS
@given(st.lists(st.tuples(PROSE, st.sampled_from(MARKERS), st.sampled_from(PAYLOADS)), max_size=6), PROSE)
def test_stripping_keeps_the_text_around_blocks(parts: list[tuple[str, str, str]], tail: str) -> None:
    text = "".join(f"{prose}[{name}]{payload}[/{name}]" for prose, name, payload in parts) + tail
    expected = " ".join("".join(prose for prose, _, _ in parts).split() + tail.split())
    visible = parse_reply(text).visible
    assert " ".join(visible.replace("\\", "").split()) == expected or " ".join(visible.split()) == " ".join(
        " ".join([*(p for p, _, _ in parts), tail]).split()
    )


@SETTINGS
@given(REPLIES, st.data())
def test_visible_prefix_is_a_prefix_of_the_final_visible_text(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    final = parse_reply(text).visible
    assert final.startswith(visible_prefix(text[:cut]))
    assert visible_prefix(text) == final or final.startswith(visible_prefix(text))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(TAGS + PAYLOADS + ["```\n", "x"]), st.integers(min_value=1, max_value=3000))
def test_repeated_fragments_parse_without_error(fragment: str, count: int) -> None:
    # Linear time is measured by bench/bench_markers.py; here only that large repetitive inputs go through.
    reply = parse_reply(fragment * count)
    assert parse_reply(reply.visible).events == ()
