"""Marker parser: the validation rules UC-008…UC-013, stripping and hygiene (UC-006), task lane ids (UC-015/016)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from deskpilot.chat.events import (
    CHAT_EVENT_TOOLS,
    CHAT_EVENTS,
    MAX_ACTIONS,
    MAX_FACTS,
    MAX_FORK_OPTIONS,
    MAX_QUESTIONS,
    TOOL_NAMES,
    ActionsEvent,
    FixOutcomeEvent,
    ForkEvent,
    PromoteEvent,
    QuestionsEvent,
    SuggestFixEvent,
    TaskLane,
    build_task_lane,
    decode_tool_call,
    event_marker,
)
from deskpilot.chat.markers import MAX_BLOCK_CHARS, clean_user_message, parse_reply, visible_prefix
from deskpilot.llm.messages import ToolCall

REF = "0b7e8a52-5d1c-4f7a-9a43-2f1e6c3d4b5a"
FIX = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"


def block(name: str, payload: object) -> str:
    return f"[{name}]\n{json.dumps(payload)}\n[/{name}]"


FORK = {"fork_reason": "two causes", "options": [{"label": "A", "description": "a"}, {"label": "B"}]}


# --- UC-008 FORK ----------------------------------------------------------------------------------


def test_uc008_fork_with_two_options_becomes_an_event_and_is_stripped() -> None:
    reply = parse_reply(f"Two ideas.\n{block('FORK', FORK)}\nPick one.")
    assert reply.visible == "Two ideas.\nPick one."
    (event,) = reply.events
    assert isinstance(event, ForkEvent)
    assert event.fork_reason == "two causes"
    assert [o.label for o in event.options] == ["A", "B"]
    assert event.options[1].description == ""
    assert reply.problems == ()


def test_uc008_fork_with_one_option_is_dropped_and_still_stripped() -> None:
    reply = parse_reply(f"x {block('FORK', {'options': [{'label': 'A'}]})} y")
    assert reply.events == ()
    assert reply.visible == "x y"
    assert [p.marker for p in reply.problems] == ["FORK"]
    assert "at least 2" in reply.problems[-1].reason


def test_uc008_fork_without_options_list_or_not_an_object_is_dropped() -> None:
    for payload in ({"fork_reason": "x"}, {"options": "A,B"}, ["A", "B"]):
        reply = parse_reply(block("FORK", payload))
        assert reply.events == ()
        assert reply.visible == ""
        assert reply.problems


def test_uc008_fork_reason_is_optional() -> None:
    event = parse_reply(block("FORK", {"options": [{"label": "A"}, {"label": "B"}]})).events[0]
    assert isinstance(event, ForkEvent)
    assert event.fork_reason == ""


def test_uc008_only_the_first_fork_block_counts() -> None:
    second = {"options": [{"label": "C"}, {"label": "D"}]}
    reply = parse_reply(block("FORK", FORK) + "\n" + block("FORK", second))
    (event,) = reply.events
    assert isinstance(event, ForkEvent)
    assert [o.label for o in event.options] == ["A", "B"]
    assert "first" in reply.problems[0].reason
    assert reply.visible == ""


def test_uc008_fork_options_capped_deduplicated_and_need_labels() -> None:
    options = [{"label": "A"}, {"label": "a"}, {"description": "no label"}, "B"]
    options += [{"label": f"H{i}"} for i in range(MAX_FORK_OPTIONS + 2)]
    event = parse_reply(block("FORK", {"options": options})).events[0]
    assert isinstance(event, ForkEvent)
    assert len(event.options) == MAX_FORK_OPTIONS
    assert [o.label for o in event.options][:2] == ["A", "H0"]


# --- UC-009 ACTIONS -------------------------------------------------------------------------------


def test_uc009_actions_keep_label_command_description() -> None:
    payload = [{"label": "Ping the gateway", "command": "ping 10.0.0.1"}, {"label": "Reboot", "description": "d"}]
    (event,) = parse_reply(block("ACTIONS", payload)).events
    assert isinstance(event, ActionsEvent)
    assert [(a.label, a.command, a.description) for a in event.actions] == [
        ("Ping the gateway", "ping 10.0.0.1", ""),
        ("Reboot", None, "d"),
    ]


def test_uc009_items_without_label_are_dropped_and_none_valid_drops_the_block() -> None:
    reply = parse_reply(block("ACTIONS", [{"label": ""}, {"command": "x"}, 3, {"label": "  ok  "}]))
    event = reply.events[0]
    assert isinstance(event, ActionsEvent)
    assert [a.label for a in event.actions] == ["ok"]
    assert len(reply.problems) == 3
    empty = parse_reply("a " + block("ACTIONS", [{"command": "x"}]) + " b")
    assert empty.events == ()
    assert empty.visible == "a b"


def test_uc009_empty_or_non_list_actions_are_dropped() -> None:
    for payload in ([], {"label": "x"}, "x"):
        reply = parse_reply(block("ACTIONS", payload))
        assert reply.events == ()
        assert "non-empty JSON list" in reply.problems[0].reason


def test_uc009_actions_deduplicated_by_label_and_capped() -> None:
    payload = [{"label": "Same"}, {"label": "Same "}] + [{"label": f"A{i}"} for i in range(MAX_ACTIONS + 5)]
    event = parse_reply(block("ACTIONS", payload)).events[0]
    assert isinstance(event, ActionsEvent)
    assert len(event.actions) == MAX_ACTIONS
    assert [a.label for a in event.actions].count("Same") == 1


def test_uc009_long_fields_are_cut_and_wrong_types_ignored() -> None:
    event = parse_reply(block("ACTIONS", [{"label": "x" * 500, "command": 42, "description": ["d"]}])).events[0]
    assert isinstance(event, ActionsEvent)
    assert len(event.actions[0].label) == 200
    assert event.actions[0].command is None
    assert event.actions[0].description == ""


# --- UC-010 QUESTIONS -----------------------------------------------------------------------------


def test_uc010_questions_keep_text_and_context() -> None:
    (event,) = parse_reply(block("QUESTIONS", [{"text": "Which site?", "context": "scope"}, {"text": "When?"}])).events
    assert isinstance(event, QuestionsEvent)
    assert [(q.text, q.context) for q in event.questions] == [("Which site?", "scope"), ("When?", "")]


def test_uc010_items_without_text_dropped_and_none_valid_drops_the_block() -> None:
    reply = parse_reply(block("QUESTIONS", [{"context": "x"}, {"text": "   "}]))
    assert reply.events == ()
    assert "no valid question" in reply.problems[-1].reason
    assert parse_reply(block("QUESTIONS", [])).events == ()


def test_uc010_questions_deduplicated_and_capped() -> None:
    payload = [{"text": "Q"}, {"text": "Q"}] + [{"text": f"Q{i}"} for i in range(MAX_QUESTIONS + 3)]
    event = parse_reply(block("QUESTIONS", payload)).events[0]
    assert isinstance(event, QuestionsEvent)
    assert len(event.questions) == MAX_QUESTIONS
    assert event.questions[0].text == "Q"
    assert event.questions[1].text == "Q0"


def test_uc010_only_the_first_questions_block_counts() -> None:
    reply = parse_reply(block("QUESTIONS", [{"text": "one"}]) + block("QUESTIONS", [{"text": "two"}]))
    event = reply.events[0]
    assert isinstance(event, QuestionsEvent)
    assert [q.text for q in event.questions] == ["one"]


# --- UC-011 PROMOTE -------------------------------------------------------------------------------


def test_uc011_every_promote_block_counts_in_order() -> None:
    text = (
        block("PROMOTE", {"source_type": "question", "source_ref": REF, "text": " VPN drops hourly ", "summary": ""})
        + "\nbetween\n"
        + block("PROMOTE", {"source_type": "diagnostic_check", "text": "Port is clean", "summary": "switch"})
    )
    reply = parse_reply(text)
    (event,) = reply.events
    assert isinstance(event, PromoteEvent)
    first, second = event.facts
    assert (first.source_type, first.source_ref, first.text, first.summary) == (
        "question",
        uuid.UUID(REF),
        "VPN drops hourly",
        None,
    )
    assert (second.source_type, second.source_ref, second.summary) == ("diagnostic_check", None, "switch")
    assert reply.visible == "between"


def test_uc011_user_note_and_unknown_source_types_are_rejected() -> None:
    for source_type in ("user_note", "guess", None):
        reply = parse_reply("a " + block("PROMOTE", {"source_type": source_type, "text": "t"}) + " b")
        assert reply.events == ()
        assert reply.visible == "a b"
        assert "source_type" in reply.problems[0].reason


def test_uc011_text_is_required() -> None:
    reply = parse_reply(block("PROMOTE", {"source_type": "ai_synthesis", "text": "  "}))
    assert reply.events == ()
    assert "text" in reply.problems[0].reason


def test_uc011_invalid_source_ref_is_dropped_not_the_fact() -> None:
    event = parse_reply(block("PROMOTE", {"source_type": "question", "source_ref": "q-1", "text": "t"})).events[0]
    assert isinstance(event, PromoteEvent)
    assert event.facts[0].source_ref is None


def test_uc011_ai_synthesis_never_carries_a_source_ref() -> None:
    event = parse_reply(block("PROMOTE", {"source_type": "ai_synthesis", "source_ref": REF, "text": "t"})).events[0]
    assert isinstance(event, PromoteEvent)
    assert event.facts[0].source_ref is None


def test_uc011_all_promote_blocks_stripped_even_invalid_ones() -> None:
    reply = parse_reply("a [PROMOTE]{not json[/PROMOTE] b [PROMOTE][1][/PROMOTE] c")
    assert reply.visible == "a b c"
    assert reply.events == ()
    assert len(reply.problems) == 2


def test_uc011_facts_deduplicated_and_capped() -> None:
    same = block("PROMOTE", {"source_type": "ai_synthesis", "text": "same"})
    others = "".join(block("PROMOTE", {"source_type": "ai_synthesis", "text": f"f{i}"}) for i in range(MAX_FACTS + 2))
    event = parse_reply(same + same + others).events[0]
    assert isinstance(event, PromoteEvent)
    assert len(event.facts) == MAX_FACTS
    assert [f.text for f in event.facts].count("same") == 1


# --- UC-012 SUGGEST_FIX ---------------------------------------------------------------------------


def test_uc012_suggest_fix_fields_and_confidence_rounded() -> None:
    payload = {
        "title": "Renew lease",
        "description": "Release and renew",
        "confidence": 79.5,
        "script_template_slug": "dhcp-renew",
        "ai_drafted_script": "ipconfig /renew",
        "ai_drafted_parameters": {"adapter": "Ethernet"},
    }
    (event,) = parse_reply(block("SUGGEST_FIX", payload)).events
    assert isinstance(event, SuggestFixEvent)
    assert event.confidence_pct == 80
    assert event.script_template_slug == "dhcp-renew"
    assert event.ai_drafted_parameters == {"adapter": "Ethernet"}


def test_uc012_confidence_clamped_to_0_100() -> None:
    for raw, pct in ((150, 100), (-3, 0), (0.4, 0)):
        event = parse_reply(block("SUGGEST_FIX", {"title": "t", "description": "d", "confidence": raw})).events[0]
        assert isinstance(event, SuggestFixEvent)
        assert event.confidence_pct == pct


def test_uc012_title_cut_to_200() -> None:
    event = parse_reply(block("SUGGEST_FIX", {"title": "T" * 300, "description": "d", "confidence": 5})).events[0]
    assert isinstance(event, SuggestFixEvent)
    assert len(event.title) == 200


def test_uc012_required_fields_and_numeric_confidence() -> None:
    bad = [
        {"description": "d", "confidence": 5},
        {"title": "t", "confidence": 5},
        {"title": "t", "description": "d", "confidence": "80"},
        {"title": "t", "description": "d", "confidence": True},
        {"title": "t", "description": "d"},
    ]
    for payload in bad:
        reply = parse_reply("a " + block("SUGGEST_FIX", payload) + " b")
        assert reply.events == ()
        assert reply.visible == "a b"
    nan = parse_reply('[SUGGEST_FIX]{"title": "t", "description": "d", "confidence": NaN}[/SUGGEST_FIX]')
    assert nan.events == ()


def test_uc012_parameters_must_be_an_object_and_empty_optionals_are_none() -> None:
    payload = {"title": "t", "description": "d", "confidence": 1, "ai_drafted_parameters": [1], "ai_drafted_script": ""}
    event = parse_reply(block("SUGGEST_FIX", payload)).events[0]
    assert isinstance(event, SuggestFixEvent)
    assert event.ai_drafted_parameters is None
    assert event.ai_drafted_script is None
    assert event.script_template_slug is None


def test_uc012_only_the_last_block_counts_and_all_are_stripped() -> None:
    first = block("SUGGEST_FIX", {"title": "old", "description": "d", "confidence": 1})
    last = block("SUGGEST_FIX", {"title": "new", "description": "d", "confidence": 2})
    reply = parse_reply(f"a\n{first}\nb\n{last}\nc")
    (event,) = reply.events
    assert isinstance(event, SuggestFixEvent)
    assert event.title == "new"
    assert reply.visible == "a\nb\nc"
    invalid_last = parse_reply(first + "[SUGGEST_FIX]{}[/SUGGEST_FIX]")
    assert invalid_last.events == ()
    assert invalid_last.visible == ""


# --- UC-013 FIX_OUTCOME ---------------------------------------------------------------------------


def test_uc013_fix_outcome_lower_cased_and_typed() -> None:
    (event,) = parse_reply(block("FIX_OUTCOME", {"fix_id": FIX, "outcome": " SUCCESS ", "reason": "works"})).events
    assert isinstance(event, FixOutcomeEvent)
    assert (event.fix_id, event.outcome, event.reason) == (uuid.UUID(FIX), "success", "works")


def test_uc013_invalid_outcome_or_fix_id_is_dropped_and_stripped() -> None:
    for payload in (
        {"fix_id": FIX, "outcome": "worked"},
        {"fix_id": "", "outcome": "failure"},
        {"fix_id": "fix-1", "outcome": "failure"},
        {"outcome": "partial"},
        ["x"],
    ):
        reply = parse_reply("a " + block("FIX_OUTCOME", payload) + " b")
        assert reply.events == ()
        assert reply.visible == "a b"
        assert reply.problems


def test_uc013_only_the_last_block_counts() -> None:
    text = block("FIX_OUTCOME", {"fix_id": FIX, "outcome": "failure"}) + block(
        "FIX_OUTCOME", {"fix_id": FIX, "outcome": "partial"}
    )
    event = parse_reply(text).events[0]
    assert isinstance(event, FixOutcomeEvent)
    assert event.outcome == "partial"
    assert event.reason == ""


# --- common rules (section 2.2) -------------------------------------------------------------------


def test_events_come_out_in_the_spec_parse_order() -> None:
    text = "\n".join(
        [
            block("FIX_OUTCOME", {"fix_id": FIX, "outcome": "success"}),
            block("SUGGEST_FIX", {"title": "t", "description": "d", "confidence": 1}),
            block("PROMOTE", {"source_type": "ai_synthesis", "text": "f"}),
            block("QUESTIONS", [{"text": "q"}]),
            block("ACTIONS", [{"label": "a"}]),
            block("FORK", FORK),
        ]
    )
    reply = parse_reply(text)
    assert [event_marker(e) for e in reply.events] == [
        "FORK",
        "ACTIONS",
        "QUESTIONS",
        "PROMOTE",
        "SUGGEST_FIX",
        "FIX_OUTCOME",
    ]
    assert reply.visible == ""
    assert reply.summary(len(text))["fork"] is True


def test_fenced_json_body_is_accepted() -> None:
    for fence in ("```json", "```", "~~~JSON"):
        text = f'[ACTIONS]\n{fence}\n[{{"label": "x"}}]\n{fence[:3]}\n[/ACTIONS]'
        assert parse_reply(text).events, fence


def test_tags_any_case_and_extra_whitespace() -> None:
    reply = parse_reply('[actions]   \n\n  [{"label": "x"}]  \n\n [/Actions]')
    assert isinstance(reply.events[0], ActionsEvent)


def test_markers_inside_code_fences_or_inline_code_are_shown_not_parsed() -> None:
    text = "Example:\n```\n" + block("ACTIONS", [{"label": "x"}]) + "\n```\nand `[FORK]` in prose."
    reply = parse_reply(text)
    assert reply.events == ()
    assert reply.visible == text
    assert reply.problems == ()


def test_malformed_json_never_raises_and_is_reported() -> None:
    reply = parse_reply("hi [ACTIONS][{label: x}][/ACTIONS] there")
    assert reply.visible == "hi there"
    assert reply.problems[0].marker == "ACTIONS"
    assert reply.problems[0].position == 3


def test_deeply_nested_json_is_dropped_not_a_crash() -> None:
    reply = parse_reply("[ACTIONS]" + "[" * 100_000 + "[/ACTIONS] ok")
    assert reply.visible == "ok"
    assert reply.events == ()


def test_oversized_block_is_dropped_unread() -> None:
    payload = [{"label": "x", "description": "y" * MAX_BLOCK_CHARS}]
    reply = parse_reply(block("ACTIONS", payload))
    assert reply.events == ()
    assert "characters" in reply.problems[0].reason


def test_unclosed_tag_before_prose_removes_only_the_tag() -> None:
    reply = parse_reply("Look [ACTIONS] at this.")
    assert reply.visible == "Look at this."
    assert "unclosed" in reply.problems[0].reason


def test_unclosed_block_with_cut_off_json_is_dropped_to_the_end() -> None:
    reply = parse_reply('Checking.\n[QUESTIONS]\n[{"text": "Which sit')
    assert reply.visible == "Checking."
    assert reply.events == ()


def test_unclosed_block_with_complete_json_keeps_the_prose_after_it() -> None:
    reply = parse_reply('A\n[ACTIONS]\n[{"label": "x"}]\nB\n' + block("QUESTIONS", [{"text": "q"}]))
    assert reply.visible == "A\nB"
    assert [event_marker(e) for e in reply.events] == ["QUESTIONS"]


def test_stray_closing_tag_is_removed() -> None:
    reply = parse_reply("done [/FORK] here")
    assert reply.visible == "done here"
    assert "stray" in reply.problems[0].reason


# --- UC-006 stored-text hygiene -------------------------------------------------------------------


def test_uc006_stored_assistant_text_is_the_display_text_with_blank_lines_tidied() -> None:
    text = "  \n\nIntro.\n\n" + block("ACTIONS", [{"label": "x"}]) + "\n\n\n\nOutro.  \n\n"
    assert parse_reply(text).visible == "Intro.\n\nOutro."


def test_uc006_stored_user_message_neutralises_task_lane_markers() -> None:
    message = "- Check DNS _(not yet completed)_\n- Reboot _(skipped)_"
    assert clean_user_message(message) == "- Check DNS (pending)\n- Reboot (skipped)"


# --- streaming ------------------------------------------------------------------------------------


def test_visible_prefix_holds_back_an_open_block_and_a_tag_being_written() -> None:
    assert visible_prefix("Checking [ACT") == "Checking"
    assert visible_prefix("Checking [/") == "Checking"
    assert visible_prefix('Checking [ACTIONS][{"label"') == "Checking"
    assert visible_prefix("Checking [ACTIONS][][/ACTIONS] more") == "Checking more"
    assert visible_prefix("a [link] b") == "a [link] b"


def test_visible_prefix_holds_back_an_unfinished_fence_line() -> None:
    assert visible_prefix("Code:\n```py") == "Code:"
    assert visible_prefix("Code:\n```py\n[FORK]") == "Code:\n```py\n[FORK]"


# --- UC-015/016 task lane -------------------------------------------------------------------------


def test_uc015_no_questions_and_no_actions_clears_the_lane() -> None:
    assert build_task_lane(TaskLane(), None, None) is None


def test_uc016_ids_are_kept_for_the_same_text_or_label() -> None:
    reply = parse_reply(block("QUESTIONS", [{"text": "Q1"}, {"text": "Q2"}]) + block("ACTIONS", [{"label": "A1"}]))
    questions = reply.event("QUESTIONS")
    actions = reply.event("ACTIONS")
    assert isinstance(questions, QuestionsEvent)
    assert isinstance(actions, ActionsEvent)
    first = build_task_lane(None, questions, actions)
    assert first is not None
    again = parse_reply(block("QUESTIONS", [{"text": "Q2"}, {"text": "Q3"}]))
    questions2 = again.event("QUESTIONS")
    assert isinstance(questions2, QuestionsEvent)
    second = build_task_lane(first, questions2, None)
    assert second is not None
    assert second.questions[0].id == first.questions[1].id
    assert second.questions[1].id not in {q.id for q in first.questions}
    assert second.actions == ()


# --- the tool-call encoding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "payload", "arguments"),
    [
        ("FORK", FORK, FORK),
        ("ACTIONS", [{"label": "x"}], {"actions": [{"label": "x"}]}),
        ("QUESTIONS", [{"text": "q"}], {"questions": [{"text": "q"}]}),
        (
            "PROMOTE",
            {"source_type": "question", "source_ref": REF, "text": "t"},
            {"facts": [{"source_type": "question", "source_ref": REF, "text": "t"}]},
        ),
        ("SUGGEST_FIX", {"title": "t", "description": "d", "confidence": 3}, None),
        ("FIX_OUTCOME", {"fix_id": FIX, "outcome": "Failure"}, None),
    ],
)
def test_tool_calls_and_markers_give_the_same_event(marker: str, payload: object, arguments: object) -> None:
    from_marker = parse_reply(block(marker, payload)).events
    call = ToolCall("c1", TOOL_NAMES[marker], json.dumps(payload if arguments is None else arguments))  # type: ignore[index]
    decoded = decode_tool_call(call)
    assert decoded.event is not None
    assert from_marker == (decoded.event,)
    assert CHAT_EVENTS.validate_python(decoded.event.model_dump()) == decoded.event


def test_every_marker_has_a_tool_definition() -> None:
    assert sorted(TOOL_NAMES.values()) == sorted(t.name for t in CHAT_EVENT_TOOLS)
    for tool in CHAT_EVENT_TOOLS:
        assert tool.parameters["type"] == "object"


def test_bad_tool_calls_are_rejected_with_a_note() -> None:
    for call in (
        ToolCall("1", "unknown", "{}"),
        ToolCall("2", "suggest_fix", "{nope"),
        ToolCall("3", "propose_actions", "[]"),
        ToolCall("4", "promote_facts", '{"facts": []}'),
    ):
        decoded = decode_tool_call(call)
        assert decoded.event is None
        assert decoded.notes


# --- the corpus of malformed replies --------------------------------------------------------------

CORPUS = Path(__file__).parent / "corpus"
# file → (markers of the events it must give, a text the visible reply must contain, one it must not)
EXPECTED: dict[str, tuple[list[str], str, str]] = {
    "deep_nesting.txt": ([], "Still here.", "[["),
    "duplicated_blocks.txt": (["FORK", "SUGGEST_FIX"], "proxy is more likely", "Flush DNS"),
    "fenced_json_body.txt": (["ACTIONS"], "Two checks first.", "DHCP"),
    "invalid_json_and_fields.txt": (["PROMOTE"], "Noted.", "unquoted"),
    "markdown_links_and_brackets.txt": ([], "[ACTION] are prose", "\n"),
    "marker_in_code_block.txt": ([], '[FORK]\n{"options"', "\n\n\n"),
    "nested_fences.txt": (["ACTIONS"], "inside nested fence", "Teams"),
    "stray_closing_tags.txt": ([], "All done and nothing", "[/"),
    "ten_thousand_tags.txt": ([], "end", "PROMOTE"),
    "truncated_stream.txt": ([], "RD gateway.", "Rebind"),
    "truncated_tag.txt": ([], "[QUEST", "\n\n\n"),
    "unclosed_tag_mid_reply.txt": (["QUESTIONS"], "Let me know", "Restart-Service"),
    "wrong_case_and_whitespace.txt": (["QUESTIONS", "FIX_OUTCOME"], "Sure.", "laptop"),
}


def test_corpus_is_complete() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_reply_parses_as_expected(name: str) -> None:
    markers, shown, hidden = EXPECTED[name]
    text = (CORPUS / name).read_text()
    reply = parse_reply(text)
    assert [event_marker(e) for e in reply.events] == markers
    assert shown in reply.visible
    assert hidden not in reply.visible
    again = parse_reply(reply.visible)
    assert (again.events, again.problems, again.visible) == ((), (), reply.visible)
    for cut in range(0, len(text), max(1, len(text) // 50)):
        assert reply.visible.startswith(visible_prefix(text[:cut]))
