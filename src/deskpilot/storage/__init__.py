"""Storage: engine, sessions, declarative base and tenant scoping."""

from deskpilot.storage.base import Base, JSONDocument, TenantMixin, TimestampMixin, UTCDateTime, UUIDPrimaryKey, utcnow
from deskpilot.storage.engine import Database
from deskpilot.storage.tenancy import ALL_ACCOUNTS, UnscopedQueryError, scoped

__all__ = [
    "ALL_ACCOUNTS",
    "Base",
    "Database",
    "JSONDocument",
    "TenantMixin",
    "TimestampMixin",
    "UTCDateTime",
    "UUIDPrimaryKey",
    "UnscopedQueryError",
    "scoped",
    "utcnow",
]
