"""Settings: nested env variables, and placeholder secrets refused outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deskpilot.security.crypto import generate_key
from deskpilot.settings import Environment, Settings


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKPILOT_DATABASE__URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("DESKPILOT_LLM__ROUTES", '{"quick": ["openai:gpt-4o-mini", "anthropic:claude-haiku"]}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database.url == "postgresql+asyncpg://u@h/db"
    assert settings.llm.routes["quick"][1] == "anthropic:claude-haiku"
    assert settings.llm_configured


def test_development_defaults_run_without_secrets() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.is_sqlite
    assert not settings.llm_configured


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY is a placeholder"):
        Settings(environment=Environment.PRODUCTION, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="ENCRYPTION_KEYS"):
        Settings.model_validate({"environment": "production", "security": {"secret_key": "s" * 40}})


def test_production_accepts_real_secrets() -> None:
    settings = Settings.model_validate(
        {"environment": "production", "security": {"secret_key": "s" * 40, "encryption_keys": [generate_key()]}}
    )
    assert settings.environment is Environment.PRODUCTION
