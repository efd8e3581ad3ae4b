"""Application settings: one Settings object, built at the entry point and passed down."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev-secret-key-change-me"})
DEV_SECRET_KEY = "dev-secret-key-change-me"
# A fixed, publicly known Fernet key: acceptable only for development and tests.
DEV_ENCRYPTION_KEY = "ZGVza3BpbG90LWRldmVsb3BtZW50LWtleS0wMDAwMDA="


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class DatabaseSettings(BaseModel):
    url: str = "sqlite+aiosqlite:///./deskpilot.db"
    echo: bool = False
    pool_size: int = 10


class RedisSettings(BaseModel):
    url: str | None = None


class SecuritySettings(BaseModel):
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # First key encrypts; all keys decrypt, so keys can be rotated by prepending a new one.
    encryption_keys: list[SecretStr] = Field(default_factory=lambda: [SecretStr(DEV_ENCRYPTION_KEY)])
    session_cookie: str = "deskpilot_session"
    session_max_age_s: int = 60 * 60 * 12
    cookie_secure: bool = False


class LLMProviderSettings(BaseModel):
    api_key: SecretStr | None = None
    base_url: str | None = None


class ModelPrice(BaseModel):
    """What a model costs, in US dollars per million tokens (the unit providers publish)."""

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)


# "provider:model" names (shell-style globs) of the models that take images. o1-mini and o3-mini have no vision,
# hence the narrower o-series patterns; Claude models from Claude 3 on all do.
DEFAULT_VISION_MODELS: tuple[str, ...] = (
    "openai:gpt-4o*",
    "openai:chatgpt-4o*",
    "openai:gpt-4-turbo*",
    "openai:gpt-4.1*",
    "openai:gpt-4.5*",
    "openai:gpt-5*",
    "openai:o1",
    "openai:o1-20*",
    "openai:o1-pro*",
    "openai:o3",
    "openai:o3-20*",
    "openai:o3-pro*",
    "openai:o4-mini*",
    "anthropic:claude-*",
)


class LLMSettings(BaseModel):
    openai: LLMProviderSettings = Field(default_factory=LLMProviderSettings)
    anthropic: LLMProviderSettings = Field(default_factory=LLMProviderSettings)
    # More OpenAI-compatible endpoints by provider name, e.g. {"ollama": {"base_url": "http://localhost:11434/v1"}}
    # makes "ollama:llama3.1" usable in routes next to "openai:..." (one base_url per name).
    openai_compatible: dict[str, LLMProviderSettings] = Field(default_factory=dict)
    # purpose -> ordered fallback chain of "provider:model" names
    routes: dict[str, list[str]] = Field(default_factory=dict)
    default_model: str | None = None
    timeout_s: float = 60.0
    max_tokens_per_call: int = 4096
    max_tokens_per_run: int = 200_000
    max_tool_steps: int = 8
    # "provider:model" -> price; models without a price report tokens and an unknown cost.
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # "provider:model" names or globs of the models that accept images; a purpose takes images only when every
    # model of its fallback chain matches (e.g. add "ollama:llava*" for a local vision model).
    vision_models: list[str] = Field(default_factory=lambda: list(DEFAULT_VISION_MODELS))


class JobSettings(BaseModel):
    backend: Literal["inprocess", "celery"] = "inprocess"
    concurrency: int = 8
    broker_url: str | None = None


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"


class TelemetrySettings(BaseModel):
    tracing: bool = False
    metrics: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DESKPILOT_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems: list[str] = []
        if self.security.secret_key.get_secret_value() in PLACEHOLDER_SECRETS:
            problems.append("DESKPILOT_SECURITY__SECRET_KEY is a placeholder")
        keys = [k.get_secret_value() for k in self.security.encryption_keys]
        if not keys or any(k in PLACEHOLDER_SECRETS or k == DEV_ENCRYPTION_KEY for k in keys):
            problems.append("DESKPILOT_SECURITY__ENCRYPTION_KEYS holds a placeholder or development key")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database.url.startswith("sqlite")

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm.routes or self.llm.default_model)
