"""API token generation and hashing; only a SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "dp_"


@dataclass(frozen=True, slots=True)
class NewToken:
    secret: str
    prefix: str
    token_hash: str


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_token() -> NewToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewToken(secret=secret, prefix=secret[:10], token_hash=hash_token(secret))


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 20 < len(value) < 200
