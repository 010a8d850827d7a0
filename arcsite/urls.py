from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from arcsite import health, manifest
from arcsite.home import home
from coordination.api import metrics
from coordination.api.envelope import error
from coordination.api.schema import DocsView

urlpatterns = [
    # The manifest describes every door (REST, WebSocket, MCP, relay), so the site serves it, under /v1's rules.
    path("v1/manifest", manifest.ManifestView.as_view(), name="api-manifest"),
    path("v1/", include("coordination.api.urls")),
    path("admin/", admin.site.urls),
    path("metrics", metrics.metrics),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # The API docs page (Swagger UI over /v1/schema), outside /v1 so a browser opens it without a key.
    path("docs", DocsView.as_view(), name="api-docs"),
    path("", home),  # the manifest for JSON clients, the dashboard's overview for browsers
    path("", include("dashboard.urls")),
]


def _not_found(request: object, exception: Exception | None = None) -> object:
    return error("not found", 404)


def _server_error(request: object) -> object:
    return error("internal error: the hub failed to handle this request; it has been logged", 500)


handler404 = "arcsite.urls._not_found"
handler500 = "arcsite.urls._server_error"
