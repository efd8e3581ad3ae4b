"""The app's routes: routers are matched in order, so no two may serve the same method and path."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute

from deskpilot.api.app import create_app
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
