"""YAML import/export: exact round trips, safe loading and errors that name document and field."""

from __future__ import annotations

import pytest
import yaml

from deskpilot.knowledge import yaml_io
from deskpilot.knowledge.errors import FlowInvalid, YamlInvalid, YamlTooLarge
from deskpilot.knowledge.schemas import parse_flow_document
from tests.knowledge.flows import flow_doc


def test_export_import_export_is_byte_identical() -> None:
    doc = parse_flow_document(flow_doc(description="Line one.\nLine two: with a colon.", tags=["yes", "no", "on"]))
    text = yaml_io.flow_to_yaml(doc)
    (again,) = yaml_io.parse_flows(text)
    assert again == doc
    assert yaml_io.flow_to_yaml(again) == text
    assert "description: |-\n  Line one.\n  Line two: with a colon.\n" in text
    assert "outcome: escalate" in text
    assert "outcome: resolved" not in text


def test_multi_document_stream_round_trips() -> None:
    docs = [parse_flow_document(flow_doc(slug=f"flow-{i}", name=f"Flow {i}")) for i in range(3)]
    text = yaml_io.flows_to_yaml(docs)
    assert yaml_io.parse_flows(text) == docs
    assert yaml_io.flows_to_yaml(yaml_io.parse_flows(text)) == text


def test_yes_and_no_are_strings() -> None:
    text = yaml_io.flow_to_yaml(parse_flow_document(flow_doc()))
    text = text.replace("label: Web too", "label: No").replace("label: Desktop only", "label: yes")
    (doc,) = yaml_io.parse_flows(text)
    first = doc.definition.nodes[0]
    assert [o.label for o in first.options] == ["No", "yes"]  # type: ignore[union-attr]


def test_errors_name_document_and_field() -> None:
    good = yaml.safe_dump(flow_doc(slug="good"))
    bad = flow_doc(slug="bad")
    bad["definition"]["nodes"][1]["on_success"] = "ghost"
    stream = "\n---\n".join([good, yaml.safe_dump(bad), yaml.safe_dump(flow_doc(slug="good"))])
    with pytest.raises(FlowInvalid) as exc:
        yaml_io.parse_flows(stream)
    errors = exc.value.extra["errors"]
    assert {"document": 2, "field": "definition.nodes.1.on_success", "message": "'ghost' is not a node id"} in errors
    assert any(e["document"] == 3 and e["field"] == "slug" and "document 1" in e["message"] for e in errors)
    assert "document 2: definition.nodes.1.on_success" in exc.value.detail


@pytest.mark.parametrize(("text", "message"), [
    ("a: [1\n", "line 2"),
    ("a: &x [1, 2]\nb: *x\n", "aliases"),
    ("", "no documents"),
    ("---\n- just\n- a list\n", "expected a mapping"),
    ("x: !!python/object:os.system ls\n", "cannot be parsed"),
    (b"a: \xc3\x28\n", "cannot be parsed"),
])
def test_malformed_yaml(text: str | bytes, message: str) -> None:
    with pytest.raises(YamlInvalid) as exc:
        yaml_io.parse_flows(text)
    assert exc.value.code == "yaml_invalid"
    assert message in exc.value.detail


def test_size_and_document_limits() -> None:
    with pytest.raises(YamlTooLarge) as exc:
        yaml_io.load_documents("#" * (yaml_io.MAX_YAML_BYTES + 1))
    assert exc.value.status == 413
    with pytest.raises(YamlInvalid, match="limit"):
        yaml_io.load_documents("---\na: 1\n" * (yaml_io.MAX_DOCUMENTS + 1))


def test_template_round_trip() -> None:
    from deskpilot.knowledge import starter

    for doc in starter.template_documents():
        assert yaml_io.parse_templates(yaml_io.template_to_yaml(doc)) == [doc]
