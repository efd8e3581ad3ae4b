"""Purposes, "provider:model" names and the registry that builds each named model once from settings."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from fnmatch import fnmatchcase

import httpx
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from deskpilot.llm.anthropic_model import AnthropicModel, make_anthropic_client
from deskpilot.llm.base import Model
from deskpilot.llm.errors import LLMNotConfigured
from deskpilot.llm.fallback import FallbackModel
from deskpilot.llm.openai_model import OpenAIModel, make_openai_client
from deskpilot.llm.provider_http import ProviderSession
from deskpilot.settings import LLMSettings


class Purpose(StrEnum):
    """What a call is for; each purpose may have its own fallback chain in `settings.llm.routes`."""

    PILOT_STEP = "pilot_step"  # one step of a guided troubleshooting session
    QUICK = "quick"  # classification, short summaries: a fast, cheap model
    CHAT = "chat"  # copilot chat replies (streamed)
    DRAFTER = "drafter"  # drafting automations, documentation, ticket notes
    AGENT = "agent"  # tool-calling background and channel agents


EXAMPLE_SETUP = (
    "DESKPILOT_LLM__DEFAULT_MODEL=openai:gpt-4o-mini with DESKPILOT_LLM__OPENAI__API_KEY "
    "(or DESKPILOT_LLM__DEFAULT_MODEL=anthropic:claude-sonnet-4-5 with DESKPILOT_LLM__ANTHROPIC__API_KEY)"
)


def route_names(settings: LLMSettings, purpose: str) -> tuple[str, ...]:
    """The ordered fallback chain for `purpose`: its route, else the default model."""
    names = settings.routes.get(purpose)
    if names:
        return tuple(names)
    if settings.default_model:
        return (settings.default_model,)
    raise LLMNotConfigured(
        f"No LLM model is configured for purpose {purpose!r}. Set {EXAMPLE_SETUP}, or give this purpose "
        f"its own chain with DESKPILOT_LLM__ROUTES__{purpose.upper()}='[\"openai:gpt-4o-mini\"]'.",
        extra={"purpose": purpose},
    )


def accepts_images(settings: LLMSettings, name: str) -> bool:
    """Whether the model `name` ("provider:model") takes images: it matches a `settings.vision_models` pattern."""
    return any(fnmatchcase(name, pattern) for pattern in settings.vision_models)


def route_accepts_images(settings: LLMSettings, purpose: str) -> bool:
    """Whether images may be sent for `purpose`: every model of its chain accepts them, so a fallback never
    drops them or fails on them. Raises `LLMNotConfigured` as `route_names` does."""
    return all(accepts_images(settings, name) for name in route_names(settings, purpose))


def split_model_name(name: str) -> tuple[str, str]:
    provider, sep, model = name.partition(":")
    if not (sep and provider and model):
        raise LLMNotConfigured(
            f"LLM model name {name!r} needs the form provider:model, e.g. 'openai:gpt-4o-mini' "
            "or 'anthropic:claude-sonnet-4-5'",
            extra={"model": name},
        )
    return provider, model


class ModelRegistry:
    """Builds each named model once; SDK clients are built once per provider and shared by its models.

    `models` adds models by exact name (test models such as "test:scripted", or custom adapters) and wins
    over settings. An injected `http_client` is shared by all SDK clients and stays owned by the caller.
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        models: Mapping[str, Model] | None = None,
    ) -> None:
        self._settings = settings
        self._http_client = http_client
        self._injected: dict[str, Model] = dict(models or {})
        self._models: dict[str, Model] = dict(self._injected)
        self._chains: dict[tuple[str, ...], Model] = {}
        self._openai_clients: dict[str, AsyncOpenAI] = {}
        # Calls to OpenAI-compatible providers go over aiohttp (see llm/provider_http.py): one session each.
        self._http: dict[str, ProviderSession] = {}
        self._anthropic_client: AsyncAnthropic | None = None

    def chain(self, names: tuple[str, ...]) -> Model:
        """One model for a chain of names: the model itself, or a FallbackModel over them."""
        model = self._chains.get(names)
        if model is None:
            models = [self.get(name) for name in names]
            model = models[0] if len(models) == 1 else FallbackModel(models)
            self._chains[names] = model
        return model

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            model = self._build(name)
            self._models[name] = model
        return model

    def _build(self, name: str) -> Model:
        provider, model_name = split_model_name(name)
        settings = self._settings
        if provider == "openai":
            return OpenAIModel(model_name, self._openai_client("openai"), http=self._http["openai"])
        if provider == "anthropic":
            return AnthropicModel(model_name, self._anthropic())
        if provider in settings.openai_compatible:
            return OpenAIModel(
                model_name, self._openai_client(provider), provider=provider, http=self._http[provider]
            )
        if provider == "test":
            raise LLMNotConfigured(
                f"test model {name!r} exists only when passed in, e.g. LLM.for_model(ScriptedModel(...))",
                extra={"model": name},
            )
        known = ", ".join(["openai", "anthropic", *settings.openai_compatible])
        raise LLMNotConfigured(
            f"unknown LLM provider {provider!r} in {name!r}; known providers: {known}. Add an OpenAI-compatible "
            f"endpoint with DESKPILOT_LLM__OPENAI_COMPATIBLE__{provider.upper()}__BASE_URL",
            extra={"model": name},
        )

    def _openai_client(self, provider: str) -> AsyncOpenAI:
        client = self._openai_clients.get(provider)
        if client is not None:
            return client
        if provider == "openai":
            section = self._settings.openai
            if section.api_key is None and section.base_url is None:
                raise LLMNotConfigured(
                    "OpenAI models need an API key: set DESKPILOT_LLM__OPENAI__API_KEY (or "
                    "DESKPILOT_LLM__OPENAI__BASE_URL for a local OpenAI-compatible server such as Ollama or vLLM)",
                    extra={"provider": provider},
                )
        else:
            section = self._settings.openai_compatible[provider]
            if section.base_url is None:
                raise LLMNotConfigured(
                    f"provider {provider!r} needs an endpoint: set "
                    f"DESKPILOT_LLM__OPENAI_COMPATIBLE__{provider.upper()}__BASE_URL",
                    extra={"provider": provider},
                )
        client = make_openai_client(
            api_key=section.api_key.get_secret_value() if section.api_key else None,
            base_url=section.base_url,
            timeout_s=self._settings.timeout_s,
            http_client=self._http_client,
        )
        self._openai_clients[provider] = client
        self._http[provider] = ProviderSession(timeout_s=self._settings.timeout_s)
        return client

    def _anthropic(self) -> AsyncAnthropic:
        if self._anthropic_client is None:
            section = self._settings.anthropic
            if section.api_key is None:
                raise LLMNotConfigured(
                    "Anthropic models need an API key: set DESKPILOT_LLM__ANTHROPIC__API_KEY",
                    extra={"provider": "anthropic"},
                )
            self._anthropic_client = make_anthropic_client(
                api_key=section.api_key.get_secret_value(),
                base_url=section.base_url,
                timeout_s=self._settings.timeout_s,
                http_client=self._http_client,
            )
        return self._anthropic_client

    async def aclose(self) -> None:
        """Close the SDK clients' connection pools, unless the http client was injected (its owner closes it), and
        the providers' aiohttp sessions (always ours)."""
        for session in self._http.values():
            await session.aclose()
        self._http.clear()
        if self._http_client is None:
            for client in self._openai_clients.values():
                await client.close()
            if self._anthropic_client is not None:
                await self._anthropic_client.close()
        self._openai_clients.clear()
        self._anthropic_client = None
        self._chains.clear()
        self._models = dict(self._injected)
