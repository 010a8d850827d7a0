"""ASGI entry point: Django (REST, long-poll, SSE, dashboard, static files) behind the request-size guard,
the MCP tools at ``/mcp`` (docs/mcp.md, ``mcpserver.http``), A2A at ``/a2a`` (docs/a2a.md,
``gateway.http``), and the WebSocket protocol at ``/v1/ws``
(docs/websocket.md, ``coordination.ws.consumer``).
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


from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.http import HttpRequest, HttpResponseBase  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from arcsite.middleware import ArcEdgeMiddleware, BodyLimit  # noqa: E402
from coordination.api import envelope  # noqa: E402
from coordination.ws.consumer import HubConsumer, NoRouteConsumer  # noqa: E402  (needs Django set up first)
from gateway import http as a2a_http  # noqa: E402
from mcpserver import http as mcp_http  # noqa: E402


class StaticFiles(ASGIStaticFilesHandler):
    """Serve ``/static/`` (the admin's and the API docs page's files) from the installed apps.

    The hub runs as one process with no web server in front, and must work offline, so it
    serves its own assets: Django's staticfiles handler (``runserver``'s), finding files in
    the apps (no ``collectstatic``), behind the same edge as every page (remote clients
    only while remote access is on; ``X-Arc-Instance``). Every other path goes to the wrapped app.
    """

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await ArcEdgeMiddleware(self._serve)(request)
        return response

    async def _serve(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return await super().get_response_async(request)
        except SuspiciousOperation:  # a path out of the static directories (../): nothing there to serve
            return envelope.error("not found", 404)


# (Django types the wrapped app as an ASGIHandler; any ASGI app works.)
django_app = StaticFiles(PathRouter(ApiASGIHandler(), HubASGIHandler()))  # type: ignore[arg-type]
# ALLOWED_HOSTS is "*": who may connect is decided per socket (loopback, or remote access on).
websockets = URLRouter([path("v1/ws", HubConsumer.as_asgi()), re_path(r"", NoRouteConsumer.as_asgi())])
application = ProtocolTypeRouter(
    {"http": BodyLimit(a2a_http.mount(mcp_http.mount(django_app))), "websocket": websockets}
)
