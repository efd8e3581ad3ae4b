"""Flow mode: drive a session by a runbook's decision tree when no LLM answers (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, assert_never

from deskpilot.knowledge.schemas import ActionNode, FlowDefinition, QuestionNode, ResolutionNode
from deskpilot.pilot.errors import InvalidResponse, UnknownOption
from deskpilot.pilot.schemas import ActionStep, QuestionStep, ResolutionSuggestionStep, StepOption

# A runbook drives a session only when it matches about as well as the LLM would be told about it (FP-016).
FLOW_MODE_MIN_SCORE: Final = 0.5

FlowStepShape = QuestionStep | ActionStep | ResolutionSuggestionStep


@dataclass(frozen=True, slots=True)
class FlowStep:
    """A step produced from a flow node; `node_id` is stored in the step content to continue from it."""

    node_id: str
    step: FlowStepShape


def _why(node_why: str | None, flow_name: str) -> str:
    return node_why or f'Next step of the runbook "{flow_name}".'


def step_for_node(definition: FlowDefinition, node_id: str, *, flow_name: str) -> FlowStep:
    """The step for one node; KeyError when the node does not exist.

    Question nodes become question steps with the node's options; action nodes become action steps whose
    "worked" / "didn't work" answer follows `on_success` / `on_failure`; resolution nodes become resolution
    suggestions. These are the shapes the LLM produces, so the console renders both modes alike. Runbook steps
    carry no confidence of their own: the session keeps its score (FP-012).
    """
    node = definition.node(node_id)
    if node is None:
        raise KeyError(node_id)
    match node:
        case QuestionNode():
            step: FlowStepShape = QuestionStep(
                content=node.text,
                context_message=_why(node.why, flow_name),
                options=[StepOption(label=o.label, value=o.value) for o in node.options],
                # Only the options lead somewhere in a runbook: typed text or a skip could not be followed.
                allow_free_text=False,
                allow_skip=False,
            )
        case ActionNode():
            step = ActionStep(
                content=node.text,
                context_message=_why(node.why, flow_name),
                action_type="script_generation" if node.script_template else "instruction",
                expected_outcome=node.expected_outcome or "",
                template_id=node.script_template,
                pre_filled_params=dict(node.default_params) or None,
            )
        case ResolutionNode():
            escalate = node.outcome == "escalate"
            step = ResolutionSuggestionStep(
                content=node.text,
                context_message=(
                    f'The runbook "{flow_name}" ends here and recommends escalating.'
                    if escalate
                    else f'The runbook "{flow_name}" ends with this fix.'
                ),
                resolution_summary=node.text,
                follow_up_recommendations=list(node.follow_up),
            )
        case unreachable:
            assert_never(unreachable)
    return FlowStep(node_id=node.id, step=step)


def first_step(definition: FlowDefinition, *, flow_name: str) -> FlowStep:
    return step_for_node(definition, definition.start, flow_name=flow_name)


def check_response(
    definition: FlowDefinition,
    node_id: str,
    *,
    selected_option: str | None,
    action_success: bool | None,
    was_skipped: bool,
) -> None:
    """Refuse a response the runbook cannot follow from `node_id` (before anything is stored)."""
    node = definition.node(node_id)
    match node:
        case None | ResolutionNode():
            return
        case QuestionNode():
            if selected_option is None:
                raise InvalidResponse("this runbook step needs one of its options", code="option_required")
            if all(o.value != selected_option for o in node.options):
                raise UnknownOption(f"option {selected_option!r} is not one of this step's options")
        case ActionNode():
            if action_success is None and not was_skipped:
                raise InvalidResponse(
                    "say whether the action worked (action_result) so the runbook can continue",
                    code="action_result_required",
                )
        case unreachable:
            assert_never(unreachable)


def next_node_id(
    definition: FlowDefinition,
    node_id: str,
    *,
    selected_option: str | None,
    action_success: bool | None,
    was_skipped: bool,
) -> str | None:
    """Where the runbook goes after the engineer's response at `node_id`; None when it has nothing more.

    An action that was skipped follows `on_failure`: the runbook's route for "that did not settle it".
    A resolution node, or a question answered with a value it does not know, ends the runbook.
    """
    node = definition.node(node_id)
    match node:
        case None | ResolutionNode():
            return None
        case QuestionNode():
            return next((o.next for o in node.options if o.value == selected_option), None)
        case ActionNode():
            return node.on_success if action_success and not was_skipped else node.on_failure
        case unreachable:
            assert_never(unreachable)


def outline(definition: FlowDefinition, *, max_nodes: int = 25) -> str:
    """A short outline of the runbook for the LLM's matched-flow section: one line per node, in order."""
    lines: list[str] = []
    for node in definition.nodes[:max_nodes]:
        match node:
            case QuestionNode():
                answers = ", ".join(o.label for o in node.options)
                lines.append(f"- Ask: {node.text} ({answers})")
            case ActionNode():
                lines.append(f"- Do: {node.text}")
            case ResolutionNode():
                lines.append(f"- {'Escalate' if node.outcome == 'escalate' else 'Fix'}: {node.text}")
            case unreachable:
                assert_never(unreachable)
    if len(definition.nodes) > max_nodes:
        lines.append(f"- … {len(definition.nodes) - max_nodes} more steps")
    return "\n".join(lines)
