"""Errors raised by the knowledge domain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from deskpilot.errors import Conflict, NotFound, UserError, ValidationFailed


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in a document: a dotted field path and what is wrong there."""

    field: str
    message: str
    document: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.document is not None:
            out["document"] = self.document
        return out

    def __str__(self) -> str:
        where = f"document {self.document}: " if self.document is not None else ""
        return f"{where}{self.field or '(document)'}: {self.message}"


class DocumentInvalid(ValidationFailed):
    """Base of the errors that list field problems in `extra["errors"]`."""

    @classmethod
    def from_errors(cls, errors: Sequence[FieldError], what: str) -> Self:
        shown = "; ".join(str(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return cls(f"invalid {what}: {shown}{more}", extra={"errors": [e.as_dict() for e in errors]})


class FlowInvalid(DocumentInvalid):
    """A flow document or its definition breaks the schema; `extra["errors"]` names each field."""

    code = "flow_invalid"


class FlowNotFound(NotFound):
    code = "flow_not_found"


class FlowVersionNotFound(NotFound):
    code = "flow_version_not_found"


class FlowSlugTaken(Conflict):
    code = "flow_slug_taken"


class TemplateInvalid(DocumentInvalid):
    """A script template's parameter schema or body is malformed."""

    code = "template_invalid"


class TemplateParamInvalid(DocumentInvalid):
    """A value given to render a template does not satisfy its parameter schema."""

    code = "template_param_invalid"


class TemplateNotFound(NotFound):
    code = "template_not_found"


class TemplateSlugTaken(Conflict):
    code = "template_slug_taken"


class TemplateInactive(Conflict):
    code = "template_inactive"


class YamlInvalid(DocumentInvalid):
    """A YAML upload cannot be parsed or is not a sequence of mapping documents."""

    code = "yaml_invalid"


class YamlTooLarge(UserError):
    status = 413
    code = "yaml_too_large"
    title = "Payload too large"
