"""Encryption at rest for integration secrets (MultiFernet: the first key encrypts, all keys decrypt)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from deskpilot.errors import RunFailure


class SecretDecryptionError(RunFailure):
    code = "secret_decryption_failed"


class Cipher(Protocol):
    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, ciphertext: str) -> str: ...


class SecretBox:
    """Encrypts strings and JSON documents; `rotate` re-encrypts with the newest key."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as e:
            raise SecretDecryptionError("stored secret cannot be decrypted with the configured keys") from e

    def encrypt_json(self, document: dict[str, Any]) -> str:
        return self.encrypt(json.dumps(document, separators=(",", ":")))

    def decrypt_json(self, ciphertext: str) -> dict[str, Any]:
        value = json.loads(self.decrypt(ciphertext))
        if not isinstance(value, dict):
            raise SecretDecryptionError("stored secret is not a JSON object")
        return value

    def rotate(self, ciphertext: str) -> str:
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken as e:
            raise SecretDecryptionError("stored secret cannot be decrypted with the configured keys") from e


def generate_key() -> str:
    return Fernet.generate_key().decode()


def redact(value: str | None) -> str:
    """What the API and logs show instead of a secret."""
    if not value:
        return ""
    return "…" + value[-4:] if len(value) > 12 else "****"
