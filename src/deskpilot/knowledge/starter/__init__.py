"""The starter library: runbook flows and script templates written for the problems MSPs meet most.

Each `flows/*.yaml` file holds one flow document, each `templates/*.yaml` one template document; the
service's `load_starter_library` copies them into an account.
"""

from __future__ import annotations

import functools
from importlib import resources

from deskpilot.knowledge import yaml_io
from deskpilot.knowledge.schemas import FlowDocument, TemplateDocument


def _texts(folder: str) -> list[tuple[str, str]]:
    root = resources.files(__name__).joinpath(folder)
    files = sorted((f for f in root.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


@functools.cache
def flow_documents() -> tuple[FlowDocument, ...]:
    """Every starter flow, parsed and validated (once per process)."""
    return tuple(doc for _name, text in _texts("flows") for doc in yaml_io.parse_flows(text))


@functools.cache
def template_documents() -> tuple[TemplateDocument, ...]:
    """Every starter script template, parsed and validated (once per process)."""
    return tuple(doc for _name, text in _texts("templates") for doc in yaml_io.parse_templates(text))


def flow_files() -> list[tuple[str, str]]:
    """(file name, YAML text) of each starter flow; the tests check that export reproduces them."""
    return _texts("flows")


def template_files() -> list[tuple[str, str]]:
    return _texts("templates")
