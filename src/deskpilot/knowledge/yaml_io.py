"""YAML import and export of flows and templates: one document per flow, safe loading, stable output."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import yaml

from deskpilot.knowledge.errors import (
    DocumentInvalid,
    FieldError,
    FlowInvalid,
    TemplateInvalid,
    YamlInvalid,
    YamlTooLarge,
)
from deskpilot.knowledge.schemas import (
    FlowDocument,
    TemplateDocument,
    parse_flow_document,
    parse_template_document,
)

MAX_YAML_BYTES = 1_000_000
MAX_DOCUMENTS = 200

D = TypeVar("D", FlowDocument, TemplateDocument)


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases: `*refs` can blow a small upload up into an enormous tree."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)


# YAML 1.1 reads yes/no/on/off as booleans, which turns an option labelled "No" into False; only
# true/false are booleans here (as in YAML 1.2).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as people write them by hand.
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def load_documents(text: str | bytes) -> list[dict[str, Any]]:
    """Parse a YAML stream into mapping documents (empty documents are skipped)."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_YAML_BYTES:
        raise YamlTooLarge(f"YAML is {size} bytes; the limit is {MAX_YAML_BYTES}")
    try:
        raw = list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        detail = f"YAML cannot be parsed at {where}: {e.problem or e.context}"
        raise YamlInvalid(detail, extra={"errors": [{"field": "", "message": detail}]}) from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise YamlInvalid(f"YAML cannot be parsed: {e}") from e
    documents = [d for d in raw if d is not None]
    if not documents:
        raise YamlInvalid("the YAML holds no documents")
    if len(documents) > MAX_DOCUMENTS:
        raise YamlInvalid(f"the YAML holds {len(documents)} documents; the limit is {MAX_DOCUMENTS}")
    errors = [
        FieldError("", f"expected a mapping, got {type(d).__name__}", document=n)
        for n, d in enumerate(documents, start=1)
        if not isinstance(d, dict)
    ]
    if errors:
        raise YamlInvalid.from_errors(errors, "YAML")
    return documents


def _parse_all(text: str | bytes, parse: Callable[..., D], error: type[DocumentInvalid]) -> list[D]:
    errors: list[FieldError] = []
    parsed: list[D] = []
    seen: dict[str, int] = {}
    for n, data in enumerate(load_documents(text), start=1):
        try:
            doc = parse(data, document=n)
        except DocumentInvalid as e:
            errors.extend(FieldError(x["field"], x["message"], n) for x in e.extra.get("errors", []))
            continue
        if doc.slug in seen:
            errors.append(FieldError("slug", f"slug {doc.slug!r} is also used by document {seen[doc.slug]}", n))
        seen.setdefault(doc.slug, n)
        parsed.append(doc)
    if errors:
        raise error.from_errors(errors, "YAML")
    return parsed


def parse_flows(text: str | bytes) -> list[FlowDocument]:
    """Every flow document of a YAML stream; FlowInvalid names the document (from 1) and field of each problem."""
    return _parse_all(text, parse_flow_document, FlowInvalid)


def parse_templates(text: str | bytes) -> list[TemplateDocument]:
    return _parse_all(text, parse_template_document, TemplateInvalid)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def flow_to_yaml(document: FlowDocument) -> str:
    """One flow as YAML; loading it back gives an equal document, and dumping that gives the same text."""
    return _dump(document.model_dump(mode="json", exclude_defaults=True))


def flows_to_yaml(documents: Sequence[FlowDocument]) -> str:
    """Several flows as a multi-document YAML stream."""
    return "---\n" + "---\n".join(flow_to_yaml(d) for d in documents)


def template_to_yaml(document: TemplateDocument) -> str:
    return _dump(document.model_dump(mode="json", exclude_defaults=True))
