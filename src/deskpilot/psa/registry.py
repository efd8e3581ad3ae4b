"""The PSA kinds deskpilot knows: their settings and credential shapes and how to build their providers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from deskpilot.psa.base import PSAProvider
from deskpilot.psa.connectwise import ConnectWiseCredentials, ConnectWiseProvider, ConnectWiseSettings
from deskpilot.psa.errors import InvalidPSAConfig
from deskpilot.psa.webhook import WebhookCredentials, WebhookProvider, WebhookSettings
from deskpilot.security.crypto import redact


class PSAKind(StrEnum):
    CONNECTWISE = "connectwise"
    WEBHOOK = "webhook"


ProviderFactory = Callable[[dict[str, Any], dict[str, Any], httpx.AsyncClient | None, float | None], PSAProvider]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    kind: PSAKind
    settings_model: type[BaseModel]
    credentials_model: type[BaseModel]
    build: ProviderFactory
    # Credential fields that identify rather than authenticate: the API shows their last four characters.
    hinted: frozenset[str] = frozenset()


def _connectwise(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    http_client: httpx.AsyncClient | None,
    timeout_s: float | None,
) -> PSAProvider:
    return ConnectWiseProvider(
        ConnectWiseSettings.model_validate(settings),
        ConnectWiseCredentials.model_validate(credentials),
        http_client=http_client,
        timeout_s=timeout_s,
    )


def _webhook(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    http_client: httpx.AsyncClient | None,
    timeout_s: float | None,
) -> PSAProvider:
    return WebhookProvider(
        WebhookSettings.model_validate(settings),
        WebhookCredentials.model_validate(credentials),
        http_client=http_client,
        timeout_s=timeout_s,
    )


PROVIDERS: dict[PSAKind, ProviderSpec] = {
    PSAKind.CONNECTWISE: ProviderSpec(
        PSAKind.CONNECTWISE, ConnectWiseSettings, ConnectWiseCredentials, _connectwise, frozenset({"public_key"})
    ),
    PSAKind.WEBHOOK: ProviderSpec(PSAKind.WEBHOOK, WebhookSettings, WebhookCredentials, _webhook),
}


def spec(kind: PSAKind | str) -> ProviderSpec:
    try:
        return PROVIDERS[PSAKind(kind)]
    except ValueError:
        raise InvalidPSAConfig(f"unknown PSA kind {kind!r}; known: {', '.join(k.value for k in PSAKind)}") from None


def _invalid(what: str, kind: PSAKind | str, error: ValidationError) -> InvalidPSAConfig:
    # Only locations and messages: pydantic's `input` would echo secrets back to the caller and the logs.
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in error.errors())
    return InvalidPSAConfig(f"{what} for a {str(kind)!r} connection are invalid: {problems}")


def validate_settings(kind: PSAKind | str, settings: Mapping[str, object]) -> dict[str, Any]:
    """The normalised, JSON-ready settings document for `kind`; raises InvalidPSAConfig."""
    try:
        return spec(kind).settings_model.model_validate(dict(settings)).model_dump(mode="json", exclude_none=True)
    except ValidationError as e:
        raise _invalid("settings", kind, e) from None


def validate_credentials(kind: PSAKind | str, credentials: Mapping[str, object]) -> dict[str, str]:
    """The plain credentials document for `kind` (to be encrypted at once); raises InvalidPSAConfig."""
    try:
        model = spec(kind).credentials_model.model_validate(dict(credentials))
    except ValidationError as e:
        raise _invalid("credentials", kind, e) from None
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        for name, value in model
        if value is not None
    }


def credential_view(kind: PSAKind | str, credentials: Mapping[str, str]) -> dict[str, str | bool]:
    """What the API may show about stored credentials: `public_key: "…AB12"`, `has_private_key: true`."""
    shown: dict[str, str | bool] = {}
    entry = spec(kind)
    for name in entry.credentials_model.model_fields:
        value = credentials.get(name)
        if name in entry.hinted:
            shown[name] = redact(value)
        else:
            shown[f"has_{name}"] = bool(value)
    return shown


def build_provider(
    kind: PSAKind | str,
    settings: dict[str, Any],
    credentials: dict[str, Any],
    *,
    http_client: httpx.AsyncClient | None = None,
    timeout_s: float | None = None,
) -> PSAProvider:
    """A provider for stored (already validated) settings and decrypted credentials."""
    try:
        return spec(kind).build(settings, credentials, http_client, timeout_s)
    except ValidationError as e:
        raise _invalid("stored settings or credentials", kind, e) from None
