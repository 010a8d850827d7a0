"""ASGI entry point: Django (REST, long-poll, SSE, dashboard) behind the request-size guard,
and the WebSocket protocol at ``/v1/ws`` (SPEC section 4, ``coordination.consumers``).
"""

from __future__ import annotations

import os
from typing import Any

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arcsite.settings")

import django

django.setup(set_prefix=False)


class HubASGIHandler(ASGIHandler):
    """Django's ASGI handler without a per-request thread for sync code.

    Stock Django wraps every request in ``ThreadSensitiveContext``, so each request
    starts a fresh worker thread and, the connection being per thread, opens a new
    database connection: measured here at ~4 ms of a ~7 ms ``POST /v1/messages``.
    Without it, asgiref runs all thread-sensitive (sync) code on one long-lived
    thread that keeps one persistent connection. The hub loses no concurrency by
    that: SQLite has a single writer, and waiting (long-poll, SSE) is async.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


class ApiASGIHandler(HubASGIHandler):
    """The same Django, with only ``ARC_API_MIDDLEWARE`` around ``/v1/``.

    Django runs each sync-only middleware (sessions, CSRF, auth, messages) in async
    mode through its own thread hop per request and per response; the JSON API uses
    none of them, so it skips them.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        from django.conf import settings

        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.ARC_API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class PathRouter:
    """Send ``/v1/`` to the API handler and everything else (dashboard, admin) to the full one."""

    def __init__(self, api: Any, site: Any) -> None:
        self.api, self.site = api, site

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = self.api if scope.get("path", "").startswith("/v1/") else self.site
        await app(scope, receive, send)


from django.urls import path, re_path  # noqa: E402

from coordination.consumers import HubConsumer, NoRouteConsumer  # noqa: E402  (needs Django set up first)
from coordination.middleware import BodyLimit  # noqa: E402

django_app = PathRouter(ApiASGIHandler(), HubASGIHandler())
# ALLOWED_HOSTS is "*": who may connect is decided per socket (loopback, or remote access on).
websockets = URLRouter([path("v1/ws", HubConsumer.as_asgi()), re_path(r"", NoRouteConsumer.as_asgi())])
application = ProtocolTypeRouter({"http": BodyLimit(django_app), "websocket": websockets})
