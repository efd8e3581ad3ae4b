"""Structured output: JSON schema of a Pydantic type, tolerant parsing and the corrective-retry prompt."""

from __future__ import annotations

import copy
import inspect
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from deskpilot.llm.messages import OutputSchema

T = TypeVar("T", bound=BaseModel)

# Keywords OpenAI's strict structured-output mode rejects; a schema using them is sent non-strict.
_NOT_STRICT_KEYWORDS = frozenset({"oneOf", "allOf", "not", "if", "then", "else", "patternProperties", "default"})
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

CORRECTION_PROMPT = (
    "Your previous reply could not be used: {errors}\n"
    "Please respond with ONLY valid JSON matching the required schema. No markdown or prose."
)


def output_schema(output_type: type[BaseModel]) -> OutputSchema:
    """Build the schema sent to providers for `output_type` (callers cache it per type)."""
    schema = output_type.model_json_schema()
    strict_schema = copy.deepcopy(schema)
    strict = _make_strict(strict_schema)
    name = _NAME_UNSAFE.sub("_", output_type.__name__)[:64] or "output"
    doc = inspect.getdoc(output_type) or ""
    if doc == inspect.getdoc(BaseModel):
        doc = ""
    description = f"Return the final answer as {output_type.__name__}." + (f" {doc}" if doc else "")
    return OutputSchema(
        name=name, description=description, json_schema=strict_schema if strict else schema, strict=strict
    )


def _make_strict(node: object) -> bool:
    """Add `additionalProperties: false` to every object in place; True if the whole schema fits strict mode."""
    if isinstance(node, list):
        return all([_make_strict(item) for item in node])
    if not isinstance(node, dict):
        return True
    ok = not (_NOT_STRICT_KEYWORDS & node.keys())
    if node.get("type") == "object":
        properties = node.get("properties")
        if not isinstance(properties, dict) or node.get("additionalProperties") not in (None, False):
            ok = False
        else:
            node["additionalProperties"] = False
            if set(node.get("required", ())) != properties.keys():
                ok = False
    for key, value in node.items():
        # Property and definition names are data, not keywords: a field called "default" stays strict.
        if key in ("properties", "$defs") and isinstance(value, dict):
            ok = all([_make_strict(v) for v in value.values()]) and ok
        elif isinstance(value, dict | list):
            ok = _make_strict(value) and ok
    return ok


def strip_fences(text: str) -> str:
    """The JSON inside a ```json fence, for servers without native structured output; else the text."""
    stripped = text.strip()
    if not stripped.startswith("```"):
        return text
    first_newline = stripped.find("\n")
    if first_newline < 0:
        return text
    body = stripped[first_newline + 1 :]
    end = body.rfind("```")
    return body[:end] if end >= 0 else body


def parse_output(output_type: type[T], raw: str) -> T:
    """Validate the raw reply; retry once without a markdown fence before giving up."""
    try:
        return output_type.model_validate_json(raw)
    except ValidationError:
        unfenced = strip_fences(raw)
        if unfenced is raw:
            raise
        return output_type.model_validate_json(unfenced)


def describe_validation_error(error: ValidationError, *, limit: int = 8) -> str:
    """A short, model-readable list of what was wrong ("field.path: message; ...")."""
    parts: list[str] = []
    for item in error.errors(include_url=False)[:limit]:
        location = ".".join(str(p) for p in item["loc"]) or "reply"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def correction_prompt(error_summary: str) -> str:
    return CORRECTION_PROMPT.format(errors=error_summary)
