"""Imports every table module so that Base.metadata is complete (Alembic, create_all, tests)."""

from collections.abc import Mapping

from deskpilot.approvals import models as approvals_models
from deskpilot.chat import models as chat_models
from deskpilot.diagnosis import models as diagnosis_models
from deskpilot.events import models as events_models
from deskpilot.identity import models as identity_models
from deskpilot.knowledge import fts as knowledge_fts
from deskpilot.knowledge import models as knowledge_models
from deskpilot.llm import models as llm_models
from deskpilot.pilot import fts as session_fts
from deskpilot.pilot import models as pilot_models
from deskpilot.psa import models as psa_models
from deskpilot.storage import Base

__all__ = [
    "Base",
    "approvals_models",
    "autogenerate_include_name",
    "chat_models",
    "diagnosis_models",
    "events_models",
    "identity_models",
    "knowledge_models",
    "llm_models",
    "pilot_models",
    "psa_models",
]


def autogenerate_include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic `include_name` hook: the full-text structures (migrations 0002, 0003) have no model to compare."""
    return knowledge_fts.autogenerate_include_name(name, type_, parent_names) and session_fts.autogenerate_include_name(
        name, type_, parent_names
    )
