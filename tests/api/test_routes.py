"""The app's routes: routers are matched in order, so no two may serve the same method and path."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute

from deskpilot.api.app import create_app
from deskpilot.api.routing import JSONRoute
from deskpilot.settings import Settings


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router
            yield from _api_routes(route.original_router.routes)


def test_no_two_routes_share_a_method_and_path(settings: Settings) -> None:
    routes = list(_api_routes(create_app(settings).router.routes))
    served = collections.Counter((method, route.path) for route in routes for method in route.methods)
    assert len(routes) > 100
    assert ("POST", "/api/v1/sessions/{session_id}/responses") in served
    assert [key for key, count in served.items() if count > 1] == []


def test_every_operation_documents_its_errors_as_problem_json(settings: Settings) -> None:
    spec = create_app(settings).openapi()
    operations = [op for item in spec["paths"].values() for op in item.values()]
    assert len(operations) > 100
    undocumented = [op["operationId"] for op in operations
                    if "application/problem+json" not in op["responses"].get("default", {}).get("content", {})]
    assert undocumented == []
    # FastAPI's own 422 shape (HTTPValidationError) is not what the API answers: a validation error is a problem.
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    schema = operations[0]["responses"]["default"]["content"]["application/problem+json"]["schema"]
    assert (schema["title"], schema["required"]) == ("ProblemDetails", [
        "type", "title", "status", "detail", "code", "instance"
    ])


def test_every_router_parses_json_strictly(settings: Settings) -> None:
    routes = list(_api_routes(create_app(settings).router.routes))
    assert [route.path for route in routes if not isinstance(route, JSONRoute)] == []
