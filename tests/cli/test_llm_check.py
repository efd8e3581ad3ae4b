"""`deskpilot llm check` against nothing configured and against the loopback fake OpenAI server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deskpilot.cli.main import app
from tests.fakes import FakeOpenAIServer, json_reply

runner = CliRunner()


@pytest.fixture
def no_llm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DEFAULT_MODEL", "ROUTES", "OPENAI__BASE_URL", "OPENAI__API_KEY"):
        monkeypatch.delenv(f"DESKPILOT_LLM__{name}", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env is read


@pytest.fixture
def openai_server(no_llm: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key="test") as server:
        monkeypatch.setenv("DESKPILOT_LLM__DEFAULT_MODEL", "openai:gpt-test")
        monkeypatch.setenv("DESKPILOT_LLM__OPENAI__BASE_URL", server.base_url)
        monkeypatch.setenv("DESKPILOT_LLM__OPENAI__API_KEY", "test")
        yield server


def test_without_a_model_it_names_the_setting(no_llm: None) -> None:
    result = runner.invoke(app, ["llm", "check"])
    assert result.exit_code == 1
    assert "DESKPILOT_LLM__DEFAULT_MODEL" in " ".join(result.output.split())


def test_a_model_that_answers_structured_passes(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(json_reply({"ok": True, "word": "pong"}))
    result = runner.invoke(app, ["llm", "check"])
    assert result.exit_code == 0, result.output
    assert "openai:gpt-test: answered with valid structured output" in " ".join(result.output.split())
    assert openai_server.last_request.headers["authorization"] == "Bearer test"


def test_malformed_output_fails_the_check(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(json_reply({"ok": "maybe"}), json_reply({"nope": 1}))
    result = runner.invoke(app, ["llm", "check"])
    assert result.exit_code == 1, result.output
