"""The application's long-lived parts, built once in create_app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from deskpilot.security.cookies import SessionSigner
from deskpilot.security.crypto import SecretBox
from deskpilot.settings import Settings
from deskpilot.storage import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    secrets: SecretBox
    signer: SessionSigner

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        return cls(
            settings=settings,
            db=Database(settings.database.url, echo=settings.database.echo, pool_size=settings.database.pool_size),
            secrets=SecretBox([k.get_secret_value() for k in settings.security.encryption_keys]),
            signer=SessionSigner(
                settings.security.secret_key.get_secret_value(), max_age_s=settings.security.session_max_age_s
            ),
        )

    async def start(self) -> None:
        """Start background parts (job runner, pub/sub) once the event loop runs."""

    async def close(self) -> None:
        await self.db.dispose()
