"""Signed console session cookies and CSRF tokens bound to the session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    user_id: uuid.UUID
    account_id: uuid.UUID
    nonce: str
    # The user's `session_epoch` when the cookie was issued: the cookie is void once the user's epoch moved on.
    epoch: int = 0


class SessionSigner:
    def __init__(self, secret_key: str, *, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="deskpilot.console-session")
        self._csrf_key = hashlib.sha256(("csrf:" + secret_key).encode()).digest()
        self.max_age_s = max_age_s

    def issue(self, user_id: uuid.UUID, account_id: uuid.UUID, epoch: int = 0) -> str:
        payload = {"u": str(user_id), "a": str(account_id), "n": secrets.token_urlsafe(16), "e": epoch}
        return self._serializer.dumps(payload)

    def read(self, cookie: str) -> ConsoleSession | None:
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
            return ConsoleSession(user_id=uuid.UUID(data["u"]), account_id=uuid.UUID(data["a"]), nonce=data["n"],
                                  epoch=int(data.get("e", 0)))
        except (BadSignature, SignatureExpired, KeyError, ValueError, TypeError):
            return None

    def csrf_token(self, session: ConsoleSession) -> str:
        return hmac.new(self._csrf_key, session.nonce.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: ConsoleSession, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(session), token)
