"""Template rendering: parameter checks, quoting per language, placeholder placement and prompt text."""

from __future__ import annotations

import ast
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskpilot.knowledge import starter
from deskpilot.knowledge.errors import TemplateInvalid, TemplateParamInvalid
from deskpilot.knowledge.models import ScriptLanguage
from deskpilot.knowledge.schemas import TemplateBrief, TemplateDocument, parse_template_document
from deskpilot.knowledge.templates import (
    check_body,
    format_templates_for_prompt,
    placeholders,
    quote,
    render,
    resolve_params,
)
from tests.knowledge.flows import template_doc

NASTY = [
    "x'; Remove-Item -Recurse C:\\ ; '",
    "$(Remove-Item C:\\)",
    "`whoami`",
    "$(touch /tmp/pwned)",
    "a\"b\"c",
    "it\u2019s \u2018quoted\u2019 \u201a\u201b",
    "; rm -rf / #",
    "\\' + __import__('os').system('id') + '",
    "",
]
# Control characters are refused before quoting, so the strategies leave them out.
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=80)


def _doc(language: str, body: str, params: list[dict[str, Any]] | None = None) -> TemplateDocument:
    return parse_template_document(template_doc(
        language=language, body=body,
        parameters=params if params is not None else [{"name": "value", "label": "Value"}],
    ))


def _powershell_single_quoted(literal: str) -> str:
    """Read one PowerShell single-quoted string literal; fail if anything follows it."""
    quotes = "'\u2018\u2019\u201a\u201b"
    assert literal[0] in quotes
    out, i = [], 1
    while i < len(literal):
        c = literal[i]
        if c in quotes:
            if i + 1 < len(literal) and literal[i + 1] in quotes:
                out.append(c)
                i += 2
                continue
            assert i == len(literal) - 1, f"literal ends early at {i}: {literal!r}"
            return "".join(out)
        out.append(c)
        i += 1
    raise AssertionError(f"unterminated literal {literal!r}")


@settings(max_examples=200, deadline=None)
@given(SAFE_TEXT)
def test_every_string_becomes_exactly_one_literal(value: str) -> None:
    assert _powershell_single_quoted(quote(value, ScriptLanguage.POWERSHELL)) == value
    assert shlex.split(quote(value, ScriptLanguage.BASH)) == [value]
    assert ast.literal_eval(quote(value, ScriptLanguage.PYTHON)) == value


@pytest.mark.parametrize("value", NASTY)
def test_injection_attempts_stay_data_in_powershell_and_python(value: str) -> None:
    ps = render(_doc("powershell", "$Value = {{value}}\nWrite-Output $Value\n"), {"value": value})
    first_line = ps.splitlines()[0]
    assert _powershell_single_quoted(first_line.removeprefix("$Value = ")) == value
    py = render(_doc("python", "VALUE = {{value}}\n"), {"value": value})
    scope: dict[str, Any] = {}
    exec(compile(py, "<template>", "exec"), scope)  # the rendered script must only assign the value
    assert scope["VALUE"] == value


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("value", NASTY)
def test_injection_attempts_stay_data_in_bash(value: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attack = value.replace("/tmp/pwned", str(marker))
    script = render(_doc("bash", "value={{value}}\nprintf '%s' \"$value\"\n"), {"value": attack})
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout == attack
    assert not marker.exists()


def test_booleans_and_integers_per_language() -> None:
    assert quote(True, ScriptLanguage.POWERSHELL) == "$true"
    assert quote(False, ScriptLanguage.BASH) == "false"
    assert quote(True, ScriptLanguage.PYTHON) == "True"
    assert quote(-3, ScriptLanguage.POWERSHELL) == "(-3)"
    assert quote(42, ScriptLanguage.BASH) == "42"


def test_parameters_are_checked_and_named() -> None:
    params: list[dict[str, Any]] = [
        {"name": "user", "label": "User", "pattern": "^[a-z]+$"},
        {"name": "days", "label": "Days", "type": "int", "required": False, "default": 30},
        {"name": "store", "label": "Store", "type": "choice", "choices": ["My", "Root"], "required": False,
         "default": "My"},
        {"name": "force", "label": "Force", "type": "bool", "required": False, "default": False},
        {"name": "note", "label": "Note", "required": False},
    ]
    doc = _doc("powershell", "$u = {{user}}; $d = {{days}}; $s = {{store}}; $f = {{force}}; $n = {{note}}", params)
    assert resolve_params(doc, {"user": "bob", "days": "7", "force": "TRUE"}) == {
        "user": "bob", "days": 7, "store": "My", "force": True, "note": ""}
    assert render(doc, {"user": "bob"}) == "$u = 'bob'; $d = 30; $s = 'My'; $f = $false; $n = ''"
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({}, "params.user", "is required"),
        ({"user": "Bob1"}, "params.user", "does not match the pattern"),
        ({"user": "bob", "days": "soon"}, "params.days", "whole number"),
        ({"user": "bob", "days": True}, "params.days", "boolean"),
        ({"user": "bob", "store": "CA"}, "params.store", "not one of"),
        ({"user": "bob", "force": "maybe"}, "params.force", "true or false"),
        ({"user": "bob", "note": "two\nlines"}, "params.note", "control character"),
        ({"user": "bob", "note": "x" * 2001}, "params.note", "longer than"),
        ({"user": "bob", "note": 5}, "params.note", "expected text"),
        ({"user": "bob", "colour": "red"}, "params.colour", "has no parameter 'colour'"),
    ]
    for values, field, message in bad:
        with pytest.raises(TemplateParamInvalid) as exc:
            render(doc, values)
        assert exc.value.code == "template_param_invalid"
        errors = exc.value.extra["errors"]
        assert any(e["field"] == field and message in e["message"] for e in errors), (values, errors)


@pytest.mark.parametrize(("language", "body"), [
    ("powershell", 'Write-Host "Hello {{value}}"'),
    ("powershell", "$x = @\"\nuser {{value}}\n\"@\n"),
    ("bash", 'echo "user: {{value}}"'),
    ("bash", "cat <<EOF\n{{value}}\nEOF\n"),
    ("bash", "echo 'x {{value}}'"),
    ("python", 'print(f"{ {{value}} }")'),
    ("python", '"""\n{{value}}\n"""'),
])
def test_placeholders_inside_strings_are_refused(language: str, body: str) -> None:
    with pytest.raises(TemplateInvalid) as exc:
        _doc(language, body)
    assert exc.value.code == "template_invalid"
    assert "inside a string" in exc.value.detail


@pytest.mark.parametrize(("language", "body"), [
    ("powershell", "# for user {{value}}\n$x = {{value}}\nWrite-Host \"done\" # it's fine\n"),
    ("bash", "echo ${#PATH} {{value}}\nx=\"$(date)\" # don't\ny={{value}}\n"),
    ("bash", "cat <<EOF\nplain\nEOF\nz={{value}}\n"),
    ("python", "x = {{value}}  # comment with 'quote\ny = 'a' + {{value}}\n"),
])
def test_placeholders_outside_strings_are_accepted(language: str, body: str) -> None:
    assert check_body(_doc(language, body)) == []


def test_unknown_placeholder_is_refused() -> None:
    with pytest.raises(TemplateInvalid, match=r"\{\{who\}\} names no parameter"):
        _doc("bash", "echo {{who}}")
    assert placeholders("{{a}} {{ b }} {{a}}") == ["a", "b"]


def test_every_starter_template_is_sound() -> None:
    docs = starter.template_documents()
    assert len(docs) >= 12
    languages = {d.language for d in docs}
    assert languages == set(ScriptLanguage)
    for doc in docs:
        assert check_body(doc) == [], doc.slug
        assert set(placeholders(doc.body)) == {p.name for p in doc.parameters}, doc.slug
        required = {p.name: "x" for p in doc.parameters if p.required and p.default is None and p.type == "string"}
        if doc.slug == "tcp-port-probe" or doc.slug == "tls-certificate-check":
            required = {"host": "example.com"}
        elif doc.slug in ("mailbox-size-report", "exo-inbox-rules-forwarding"):
            required = {"mailbox": "user@example.com"}
        assert "{{" not in render(doc, required), doc.slug


def test_prompt_block_lists_name_id_description_and_parameters() -> None:
    assert format_templates_for_prompt([]) == ""
    tid = uuid.uuid4()
    block = format_templates_for_prompt([
        TemplateBrief(id=tid, slug="unlock-user", name="Unlock", language=ScriptLanguage.POWERSHELL,
                      description="Unlocks\n an account.", parameters=["username", "force"]),
        TemplateBrief(id=uuid.uuid4(), slug="spooler", name="Spooler", language=ScriptLanguage.POWERSHELL,
                      description="", parameters=[]),
    ])
    lines = block.splitlines()
    assert lines[0] == "## AVAILABLE SCRIPTS"
    assert f"- Unlock (ID: {tid}, slug: unlock-user, powershell): Unlocks an account." in lines
    assert "  Parameters: username, force" in lines
    assert "  Parameters: none" in lines
