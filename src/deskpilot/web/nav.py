"""The console's sections: one entry per side-navigation item, in display order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    label: str
    href: str
    icon: str
    summary: str


SECTIONS: tuple[Section, ...] = (
    Section("pilot", "Pilot", "/pilot", "compass", "Guided troubleshooting sessions"),
    Section("chat", "Chat", "/chat", "chat", "Free chat copilot"),
    Section("inbox", "Inbox", "/inbox", "inbox", "Customer conversations from channels"),
    Section("agents", "Agents", "/agents", "bot", "Channel and background agents"),
    Section("automations", "Automations", "/automations", "zap", "Scheduled automations and their runs"),
    Section("approvals", "Approvals", "/approvals", "check", "Changes waiting for a human"),
    Section("knowledge", "Knowledge", "/knowledge", "book", "Runbooks, flows and documentation"),
    Section("settings", "Settings", "/settings", "gear", "Profile, team and API tokens"),
)
