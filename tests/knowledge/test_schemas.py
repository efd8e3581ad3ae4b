"""Flow definitions and documents: shape, graph rules and field paths in errors (no database)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskpilot.knowledge.errors import FlowInvalid, TemplateInvalid
from deskpilot.knowledge.schemas import (
    MAX_NODES,
    FlowDefinition,
    check_graph,
    parse_definition,
    parse_flow_document,
    parse_template_document,
    slugify,
)
from tests.knowledge.flows import definition, flow_doc, template_doc


def _fields(exc: pytest.ExceptionInfo[FlowInvalid] | pytest.ExceptionInfo[TemplateInvalid]) -> set[str]:
    return {e["field"] for e in exc.value.extra["errors"]}


def test_valid_definition_parses_and_lists_texts() -> None:
    parsed = parse_definition(definition())
    assert parsed.start == "scope"
    assert parsed.node("fixed") is not None
    assert parsed.node("nope") is None
    texts = list(parsed.node_texts())
    assert "Web too" in texts
    assert "Separates the account from the client." in texts


def test_edges_must_land_on_nodes() -> None:
    data = definition()
    data["nodes"][0]["options"][1]["next"] = "nowhere"
    data["nodes"][1]["on_failure"] = "missing"
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(data)
    assert exc.value.code == "flow_invalid"
    assert {"definition.nodes.0.options.1.next", "definition.nodes.1.on_failure"} <= _fields(exc)
    assert "'nowhere' is not a node id" in exc.value.detail


def test_duplicate_ids_unreachable_nodes_and_missing_start() -> None:
    data = definition()
    data["nodes"].append({"id": "fixed", "type": "resolution", "text": "again"})
    data["nodes"].append({"id": "orphan", "type": "resolution", "text": "nobody links here"})
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(data)
    assert {"definition.nodes.4.id", "definition.nodes.5"} <= _fields(exc)
    data = definition()
    data["start"] = "ghost"
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(data)
    assert "definition.start" in _fields(exc)


def test_needs_a_resolution_and_distinct_option_values() -> None:
    data = {"start": "a", "nodes": [
        {"id": "a", "type": "question", "text": "Loop?", "options": [
            {"value": "x", "label": "X", "next": "b"}, {"value": "x", "label": "Again X", "next": "b"}]},
        {"id": "b", "type": "action", "text": "Do", "on_success": "a", "on_failure": "a"},
    ]}
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(data)
    assert {"definition.nodes", "definition.nodes.0.options.1.value"} <= _fields(exc)


def test_shape_errors_name_the_field_without_the_union_tag() -> None:
    data = definition()
    del data["nodes"][1]["on_success"]
    data["nodes"][0]["options"][0]["colour"] = "red"
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(data)
    assert {"definition.nodes.1.on_success", "definition.nodes.0.options.0.colour"} <= _fields(exc)


def test_unknown_node_type_and_params_without_template() -> None:
    data = definition()
    data["nodes"][2]["type"] = "teleport"
    with pytest.raises(FlowInvalid):
        parse_definition(data)
    data = definition()
    data["nodes"][1]["default_params"] = {"username": "bob"}
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(data)
    assert "script_template" in exc.value.detail


def test_node_limit() -> None:
    chain = [{"id": f"n{i}", "type": "action", "text": "step", "on_success": f"n{i + 1}", "on_failure": "end"}
             for i in range(MAX_NODES)]
    chain[-1]["on_success"] = "end"
    too_many = {"start": "n0", "nodes": [*chain, {"id": "end", "type": "resolution", "text": "done"}]}
    with pytest.raises(FlowInvalid) as exc:
        parse_definition(too_many)
    assert "definition.nodes" in _fields(exc)
    assert parse_definition({"start": "n0", "nodes": [*chain[:-2], {**chain[-2], "on_success": "end"},
                                                      {"id": "end", "type": "resolution", "text": "done"}]})


def test_flow_document_errors_carry_document_number() -> None:
    bad = flow_doc(slug="Not A Slug", problem_domain="plumbing")
    with pytest.raises(FlowInvalid) as exc:
        parse_flow_document(bad, document=3)
    errors = exc.value.extra["errors"]
    assert {e["field"] for e in errors} >= {"slug", "problem_domain"}
    assert all(e["document"] == 3 for e in errors)
    assert exc.value.detail.startswith("invalid flow: document 3: ")


def test_canonical_definition_drops_defaults() -> None:
    doc = parse_flow_document(flow_doc())
    canonical = doc.canonical_definition()
    assert "outcome" not in canonical["nodes"][2]
    assert canonical["nodes"][3]["outcome"] == "escalate"
    assert FlowDefinition.model_validate(canonical) == doc.definition


def test_slugify() -> None:
    assert slugify("Outlook: credential prompts (M365)!") == "outlook-credential-prompts-m365"
    assert slugify("***") == "flow"
    assert len(slugify("x" * 300)) == 100


def test_template_document_rules() -> None:
    assert parse_template_document(template_doc()).param("force") is not None
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "c", "label": "C", "type": "choice"}, "needs choices"),
        ({"name": "c", "label": "C", "type": "string", "choices": ["a"]}, "only choice"),
        ({"name": "c", "label": "C", "type": "int", "pattern": "^1$"}, "only string"),
        ({"name": "c", "label": "C", "pattern": "("}, "not a regular expression"),
        ({"name": "c", "label": "C", "type": "int", "required": False}, "needs a default"),
        ({"name": "c", "label": "C", "type": "int", "default": "seven"}, "default of 'c'"),
        ({"name": "c", "label": "C", "type": "choice", "choices": ["a", "a"]}, "twice"),
    ]
    for param, message in cases:
        doc = template_doc(parameters=[param], body="$x = {{c}}")
        with pytest.raises(TemplateInvalid) as exc:
            parse_template_document(doc)
        assert message in exc.value.detail, (param, exc.value.detail)
    twice = template_doc(parameters=[{"name": "a", "label": "A"}, {"name": "a", "label": "B"}], body="x")
    with pytest.raises(TemplateInvalid, match="unique"):
        parse_template_document(twice)


@st.composite
def trees(draw: st.DrawFn) -> dict[str, Any]:
    """Random sound runbooks: every node points forward (or back), and all chains end in resolutions."""
    size = draw(st.integers(min_value=1, max_value=30))
    ids = [f"n{i}" for i in range(size)]
    nodes: list[dict[str, Any]] = []
    for i, node_id in enumerate(ids[:-1]):
        # The next node is always one of the targets, so every node stays reachable from the start.
        targets = [ids[i + 1], draw(st.sampled_from(ids))]
        if draw(st.booleans()):
            nodes.append({"id": node_id, "type": "question", "text": "q?", "options": [
                {"value": f"v{k}", "label": f"L{k}", "next": t} for k, t in enumerate(targets)]})
        else:
            nodes.append({"id": node_id, "type": "action", "text": "do", "on_success": targets[0],
                          "on_failure": targets[1]})
    nodes.append({"id": ids[-1], "type": "resolution", "text": "done"})
    return {"start": "n0", "nodes": draw(st.permutations(nodes))}


@settings(max_examples=60, deadline=None)
@given(trees(), st.data())
def test_random_sound_trees_pass_and_breaking_an_edge_fails(tree: dict[str, Any], data: st.DataObject) -> None:
    parsed = FlowDefinition.model_validate(tree)
    assert check_graph(parsed) == []
    broken = copy.deepcopy(tree)
    linking = [n for n in broken["nodes"] if n["type"] != "resolution"]
    if linking:
        node = data.draw(st.sampled_from(linking))
        if node["type"] == "action":
            node["on_success"] = "ghost"
        else:
            node["options"][0]["next"] = "ghost"
        assert any("'ghost' is not a node id" in e.message
                   for e in check_graph(FlowDefinition.model_validate(broken)))
