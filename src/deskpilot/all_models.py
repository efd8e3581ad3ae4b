"""Imports every table module so that Base.metadata is complete (Alembic, create_all, tests)."""

from deskpilot.events import models as events_models
from deskpilot.identity import models as identity_models
from deskpilot.storage import Base

__all__ = ["Base", "events_models", "identity_models"]
