"""The server's route table: no route shadows another (the first match wins in Starlette)."""

from __future__ import annotations

from collections import Counter

from starlette.routing import Route

from app.config import Settings
from app.runtime.context import AppContext
from app.server import create_app


def test_no_path_and_method_is_served_twice():
    app = create_app(AppContext(Settings(), None, None))
    pairs = Counter(
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    )
    assert [pair for pair, n in pairs.items() if n > 1] == []
    listing = next(
        r for r in app.routes
        if isinstance(r, Route) and r.path == "/api/campaigns" and "GET" in (r.methods or ())
    )
    assert listing.endpoint.__module__ == "app.campaigns.api"
