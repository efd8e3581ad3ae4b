"""Imports every table module so that Base.metadata is complete (Alembic, create_all, tests)."""

from deskpilot.events import models as events_models
from deskpilot.identity import models as identity_models
from deskpilot.knowledge import models as knowledge_models
from deskpilot.llm import models as llm_models
from deskpilot.pilot import models as pilot_models
from deskpilot.psa import models as psa_models
from deskpilot.storage import Base

__all__ = [
    "Base",
    "events_models",
    "identity_models",
    "knowledge_models",
    "llm_models",
    "pilot_models",
    "psa_models",
]
