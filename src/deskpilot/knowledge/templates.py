"""Script template rendering: parameter checks, per-language quoting and placeholder placement (no I/O)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from deskpilot.knowledge.errors import FieldError, TemplateParamInvalid
from deskpilot.knowledge.models import ScriptLanguage

if TYPE_CHECKING:
    from deskpilot.knowledge.schemas import TemplateBrief, TemplateDocument

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MAX_STRING_VALUE = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT = re.compile(r"^-?[0-9]{1,18}$")
# PowerShell treats the typographic single quotes as quote characters too, so they are doubled as well.
_PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

Value = str | int | bool


class ParamSpec(Protocol):
    """What coercion needs from a parameter (TemplateParam satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def choices(self) -> list[str]: ...
    @property
    def pattern(self) -> str | None: ...


def placeholders(body: str) -> list[str]:
    """Parameter names used in `body`, in order of first use."""
    return list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(body)))


def coerce_value(param: ParamSpec, value: object) -> Value:
    """Check `value` against one parameter and return it in its typed form; ValueError says why not."""
    if param.type == "int":
        if isinstance(value, bool):
            raise ValueError("expected a whole number, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.match(value.strip()):
            return int(value.strip())
        raise ValueError(f"expected a whole number, got {value!r}")
    if param.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true or false, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    if param.type == "choice":
        if value not in param.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, param.choices))}")
        return value
    if len(value) > MAX_STRING_VALUE:
        raise ValueError(f"longer than {MAX_STRING_VALUE} characters")
    if _CONTROL.search(value):
        raise ValueError("contains a control character (line break, tab, NUL…)")
    if param.pattern is not None and not re.fullmatch(param.pattern, value):
        raise ValueError(f"{value!r} does not match the pattern {param.pattern!r}")
    return value


def resolve_params(template: TemplateDocument, values: Mapping[str, object]) -> dict[str, Value]:
    """The full, typed parameter set for a render: given values checked, defaults filled in."""
    errors: list[FieldError] = []
    known = {p.name for p in template.parameters}
    for name in values:
        if name not in known:
            errors.append(FieldError(f"params.{name}", f"template {template.slug!r} has no parameter {name!r}"))
    resolved: dict[str, Value] = {}
    for param in template.parameters:
        if param.name in values:
            try:
                resolved[param.name] = coerce_value(param, values[param.name])
            except ValueError as e:
                errors.append(FieldError(f"params.{param.name}", f"parameter {param.name!r}: {e}"))
        elif param.default is not None:
            resolved[param.name] = param.default
        elif param.required:
            errors.append(FieldError(f"params.{param.name}", f"parameter {param.name!r} ({param.label}) is required"))
        else:
            resolved[param.name] = ""
    if errors:
        raise TemplateParamInvalid.from_errors(errors, "parameters")
    return resolved


def quote(value: Value, language: ScriptLanguage) -> str:
    """One literal of `language` that evaluates to `value` and nothing else."""
    if isinstance(value, bool):
        return {ScriptLanguage.POWERSHELL: "$true" if value else "$false",
                ScriptLanguage.BASH: "true" if value else "false",
                ScriptLanguage.PYTHON: repr(value)}[language]
    if isinstance(value, int):
        # A bare negative number after a PowerShell parameter name reads as another parameter.
        return f"({value})" if value < 0 and language is ScriptLanguage.POWERSHELL else str(value)
    if language is ScriptLanguage.POWERSHELL:
        escaped = "".join(c * 2 if c in _PS_SINGLE_QUOTES else c for c in value)
        return f"'{escaped}'"
    if language is ScriptLanguage.BASH:
        return shlex.quote(value)
    return repr(value)


def render(template: TemplateDocument, values: Mapping[str, object]) -> str:
    """The script with every placeholder replaced by a safely quoted literal.

    A `{{name}}` placeholder becomes one complete literal of the target language: a single-quoted
    PowerShell string (quotes doubled), a POSIX shell word quoted by `shlex.quote`, or a Python `repr`,
    so a value cannot end its literal and run code. Two rules keep that promise: placeholders may not sit
    inside a string literal, here-string/heredoc or triple-quoted string of the body (`check_body`), where
    shells would still expand `$(...)` around the inserted quotes; and string values may not contain
    control characters, so a value cannot end a comment line early.
    """
    resolved = resolve_params(template, values)
    return PLACEHOLDER.sub(lambda m: quote(resolved[m.group(1)], template.language), template.body)


# --- where placeholders may sit --------------------------------------------------------------------


def _string_spans(body: str, language: ScriptLanguage) -> list[tuple[int, int]]:
    """(start, end) offsets of string literals, here-strings and heredoc bodies; a lexer good enough for
    checking placeholder positions, not a parser."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        at_word_start = i == 0 or body[i - 1] in " \t\n;|&("
        if c == "#" and (language is ScriptLanguage.PYTHON or at_word_start):
            end = body.find("\n", i)
            i = n if end < 0 else end
            continue
        if language is ScriptLanguage.POWERSHELL and body.startswith(("@\"", "@'"), i):
            closer = "\n" + body[i + 1] + "@"
            end = body.find(closer, i + 2)
            end = n if end < 0 else end + len(closer)
            spans.append((i, end))
            i = end
            continue
        if language is ScriptLanguage.BASH and body.startswith("<<", i) and not body.startswith("<<<", i):
            match = re.match(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", body[i:])
            if match:
                word = match.group(2)
                line_end = body.find("\n", i)
                if line_end < 0:
                    break
                terminator = re.compile(rf"^\t*{re.escape(word)}[ \t]*$", re.MULTILINE)
                found = terminator.search(body, line_end + 1)
                end = n if found is None else found.end()
                spans.append((line_end + 1, end))
                i = end
                continue
        if language is ScriptLanguage.PYTHON and body.startswith(('"""', "'''"), i):
            closer = body[i : i + 3]
            end = body.find(closer, i + 3)
            end = n if end < 0 else end + 3
            spans.append((i, end))
            i = end
            continue
        if c in "\"'":
            end = _string_end(body, i, language)
            spans.append((i, end))
            i = end
            continue
        i += 1
    return spans


def _string_end(body: str, start: int, language: ScriptLanguage) -> int:
    quote_char = body[start]
    escape = {ScriptLanguage.POWERSHELL: "`", ScriptLanguage.BASH: "\\", ScriptLanguage.PYTHON: "\\"}[language]
    # Single-quoted PowerShell and shell strings know no escape character.
    escapes = not (quote_char == "'" and language is not ScriptLanguage.PYTHON)
    i = start + 1
    while i < len(body):
        c = body[i]
        if escapes and c == escape:
            i += 2
            continue
        if c == quote_char:
            return i + 1
        if c == "\n" and language is ScriptLanguage.PYTHON:
            return i
        i += 1
    return len(body)


def check_body(template: TemplateDocument) -> list[FieldError]:
    """Problems with the body's placeholders: unknown names, or a placeholder inside a string."""
    errors: list[FieldError] = []
    known = {p.name for p in template.parameters}
    spans = _string_spans(template.body, template.language)
    for match in PLACEHOLDER.finditer(template.body):
        name = match.group(1)
        line = template.body.count("\n", 0, match.start()) + 1
        if name not in known:
            errors.append(FieldError("body", f"line {line}: placeholder {{{{{name}}}}} names no parameter"))
        elif any(start <= match.start() < end for start, end in spans):
            errors.append(FieldError(
                "body",
                f"line {line}: placeholder {{{{{name}}}}} sits inside a string; it becomes a complete quoted "
                f"literal, so assign it to a variable (e.g. $x = {{{{{name}}}}}) and use the variable instead",
            ))
    return errors


# --- prompts --------------------------------------------------------------------------------------


def format_templates_for_prompt(templates: Sequence[TemplateBrief]) -> str:
    """The "available scripts" block of a troubleshooting prompt; empty when there are none."""
    if not templates:
        return ""
    lines = ["## AVAILABLE SCRIPTS", "Reference a script by its ID (template_id) and fill its parameters."]
    for t in templates:
        description = " ".join(t.description.split()) or "no description"
        lines.append(f"- {t.name} (ID: {t.id}, slug: {t.slug}, {t.language.value}): {description}")
        lines.append(f"  Parameters: {', '.join(t.parameters) if t.parameters else 'none'}")
    return "\n".join(lines)
