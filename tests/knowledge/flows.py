"""Small flow and template documents shared by the knowledge tests."""

from __future__ import annotations

from typing import Any


def definition(*, template: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid three-step runbook: ask, act (optionally with a script template), resolve or escalate."""
    action: dict[str, Any] = {
        "id": "clear-creds", "type": "action", "text": "Remove cached credentials in Credential Manager.",
        "on_success": "fixed", "on_failure": "escalate",
    }
    if template is not None:
        action["script_template"] = template
        if params:
            action["default_params"] = params
    return {
        "start": "scope",
        "nodes": [
            {"id": "scope", "type": "question", "text": "Does it happen in Outlook on the web too?",
             "why": "Separates the account from the client.",
             "options": [{"value": "web", "label": "Web too", "next": "escalate"},
                         {"value": "desktop", "label": "Desktop only", "next": "clear-creds"}]},
            action,
            {"id": "fixed", "type": "resolution", "text": "Stale credentials removed."},
            {"id": "escalate", "type": "resolution", "outcome": "escalate", "text": "Escalate to identity team."},
        ],
    }


def flow_doc(slug: str = "outlook-prompts", name: str = "Outlook keeps asking for a password", **extra: Any
             ) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "slug": slug,
        "name": name,
        "description": "Outlook shows the sign-in window again and again.",
        "problem_domain": "m365",
        "tags": ["outlook", "credentials"],
        "symptoms": ["Outlook keeps prompting for the password"],
        "definition": definition(),
    }
    doc.update(extra)
    return doc


def template_doc(slug: str = "unlock-user", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "slug": slug,
        "name": "Unlock a user",
        "language": "powershell",
        "description": "Unlocks an AD account.",
        "parameters": [
            {"name": "username", "label": "User", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            {"name": "force", "label": "Force", "type": "bool", "required": False, "default": False},
        ],
        "body": "$User = {{username}}\n$Force = {{ force }}\nUnlock-ADAccount -Identity $User\n",
    }
    doc.update(extra)
    return doc
