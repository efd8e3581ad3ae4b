"""The runbook walker (flow mode) and the branch helpers (FP-029), without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from deskpilot.knowledge.schemas import FlowDefinition
from deskpilot.pilot import branches, flow_mode
from deskpilot.pilot.errors import InvalidResponse, UnknownOption
from deskpilot.pilot.schemas import ActionStep, QuestionStep, ResolutionSuggestionStep

DEFINITION = FlowDefinition.model_validate({
    "start": "q1",
    "nodes": [
        {"id": "q1", "type": "question", "text": "Is the spooler running?", "why": "Most print failures start here",
         "options": [{"value": "yes", "label": "Yes", "next": "a1"}, {"value": "no", "label": "No", "next": "r1"}]},
        {"id": "a1", "type": "action", "text": "Clear the print queue", "expected_outcome": "Jobs print",
         "script_template": "clear-print-queue", "default_params": {"printer": "HP1"},
         "on_success": "r2", "on_failure": "r3"},
        {"id": "r1", "type": "resolution", "text": "Start the spooler service", "follow_up": ["Set it to automatic"]},
        {"id": "r2", "type": "resolution", "text": "Queue cleared"},
        {"id": "r3", "type": "resolution", "outcome": "escalate", "text": "Escalate to the print team"},
    ],
})


def test_flow_mode_question_node_becomes_a_question_step_with_its_options() -> None:
    first = flow_mode.first_step(DEFINITION, flow_name="Printing")
    assert first.node_id == "q1"
    assert isinstance(first.step, QuestionStep)
    assert [(o.label, o.value) for o in first.step.options] == [("Yes", "yes"), ("No", "no")]
    assert first.step.context_message == "Most print failures start here"
    assert first.step.allow_free_text is False
    assert first.step.allow_skip is False
    assert first.step.confidence is None


def test_flow_mode_action_node_follows_worked_or_did_not_work() -> None:
    nxt = flow_mode.next_node_id(DEFINITION, "q1", selected_option="yes", action_success=None, was_skipped=False)
    assert nxt == "a1"
    step = flow_mode.step_for_node(DEFINITION, "a1", flow_name="Printing").step
    assert isinstance(step, ActionStep)
    assert step.action_type == "script_generation"
    assert step.template_id == "clear-print-queue"
    assert step.pre_filled_params == {"printer": "HP1"}
    assert step.context_message == 'Next step of the runbook "Printing".'
    assert flow_mode.next_node_id(DEFINITION, "a1", selected_option=None, action_success=True,
                                  was_skipped=False) == "r2"
    assert flow_mode.next_node_id(DEFINITION, "a1", selected_option=None, action_success=False,
                                  was_skipped=False) == "r3"
    # A skipped action takes the runbook's "did not settle it" route.
    assert flow_mode.next_node_id(DEFINITION, "a1", selected_option=None, action_success=None,
                                  was_skipped=True) == "r3"


def test_flow_mode_resolution_node_becomes_a_resolution_suggestion_and_ends_the_walk() -> None:
    step = flow_mode.step_for_node(DEFINITION, "r1", flow_name="Printing").step
    assert isinstance(step, ResolutionSuggestionStep)
    assert step.resolution_summary == "Start the spooler service"
    assert step.follow_up_recommendations == ["Set it to automatic"]
    escalate = flow_mode.step_for_node(DEFINITION, "r3", flow_name="Printing").step
    assert "recommends escalating" in escalate.context_message
    assert flow_mode.next_node_id(DEFINITION, "r1", selected_option=None, action_success=False,
                                  was_skipped=False) is None
    with pytest.raises(KeyError):
        flow_mode.step_for_node(DEFINITION, "missing", flow_name="Printing")


def test_flow_mode_refuses_responses_the_runbook_cannot_follow() -> None:
    with pytest.raises(UnknownOption):
        flow_mode.check_response(DEFINITION, "q1", selected_option="maybe", action_success=None, was_skipped=False)
    with pytest.raises(InvalidResponse) as caught:
        flow_mode.check_response(DEFINITION, "q1", selected_option=None, action_success=None, was_skipped=False)
    assert caught.value.code == "option_required"
    with pytest.raises(InvalidResponse) as caught:
        flow_mode.check_response(DEFINITION, "a1", selected_option=None, action_success=None, was_skipped=False)
    assert caught.value.code == "action_result_required"
    flow_mode.check_response(DEFINITION, "a1", selected_option=None, action_success=True, was_skipped=False)
    flow_mode.check_response(DEFINITION, "r1", selected_option=None, action_success=None, was_skipped=False)


def test_flow_mode_outline_for_the_prompt() -> None:
    outline = flow_mode.outline(DEFINITION)
    assert "- Ask: Is the spooler running? (Yes, No)" in outline
    assert "- Do: Clear the print queue" in outline
    assert "- Escalate: Escalate to the print team" in outline
    assert flow_mode.outline(DEFINITION, max_nodes=2).endswith("- … 3 more steps")


# --- branches -------------------------------------------------------------------------------


def test_fp029_sibling_summary_is_capped_near_4k_tokens() -> None:
    digests = [
        branches.BranchDigest(f"Hypothesis {i}", "dead_end" if i % 2 else "active", "d" * 400,
                              [f"finding {i}.{j} " + "x" * 200 for j in range(30)])
        for i in range(4)
    ]
    summary = branches.sibling_summary(digests)
    assert len(summary) <= branches.CONTEXT_CHARS == 4000 * 4
    for i in range(4):
        assert f'"Hypothesis {i}"' in summary  # every branch keeps its share
    assert "dead end" in summary
    assert "in progress" in summary
    assert "earlier findings left out" in summary
    # The latest findings survive, the earliest are the ones dropped.
    assert "finding 0.29" in summary
    assert "finding 0.0 " not in summary


def test_fp029_sibling_summary_short_input_is_whole() -> None:
    summary = branches.sibling_summary([branches.BranchDigest("DNS", "untried", "Check resolvers", ["a → b"])])
    assert summary == '- "DNS" (untried): Check resolvers\n    • a → b'
    assert branches.sibling_summary([]) == ""
    assert len(branches.sibling_summary([branches.BranchDigest("L" * 50, "active", "x" * 500, [])], 40)) <= 40


def test_fp029_findings_keep_the_latest() -> None:
    findings: list[str] = []
    for i in range(branches.MAX_FINDINGS + 5):
        findings = branches.with_finding(findings, f"f{i}")
    assert len(findings) == branches.MAX_FINDINGS
    assert findings[-1] == f"f{branches.MAX_FINDINGS + 4}"
    assert len(branches.finding_line("q" * 400, "a")) <= branches.FINDING_CHARS


def _branch(label: str, parent: Any = None, lineage: list[list[str | int]] | None = None, position: int = 0,
            created: int = 0) -> Any:
    return SimpleNamespace(
        id=uuid.uuid4(), parent_branch_id=parent.id if parent else None, fork_point_id=None, label=label,
        description="", status="active", findings=[], lineage=lineage or [], position=position,
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=created),
    )


def test_fp029_tree_lineage_and_siblings() -> None:
    root = _branch("Main line")
    lineage = branches.child_lineage([], root.id, 4)
    a, b = _branch("A", root, lineage, 0, 1), _branch("B", root, lineage, 1, 1)
    a2 = _branch("A2", a, branches.child_lineage(lineage, a.id, 9), 0, 2)
    tree = branches.build_tree([a2, b, root, a], active_id=a2.id)
    assert [n.label for n in tree] == ["Main line"]
    assert [n.label for n in tree[0].children] == ["A", "B"]
    assert tree[0].children[0].children[0].is_active
    assert branches.ancestor_ids(a2.lineage) == {root.id, a.id}
    # A branch's prompt summarises every branch but itself and its ancestors.
    assert [d.label for d in branches.siblings_for(a2, [root, a, b, a2])] == ["B"]
