"""``GET /``: the manifest for a client that asks for JSON, the dashboard for everyone else (docs/protocol.md)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from arcsite import manifest
from dashboard import views as dashboard


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    # An agent given only the hub's URL onboards itself from the manifest; a browser gets the overview.
    response = manifest.manifest_response(request) if manifest.wants_json(request) else dashboard.overview(request)
    # The answer depends on Accept; the Link header tells any client where the manifest is.
    patch_vary_headers(response, ["Accept"])
    response["Link"] = '</v1/manifest>; rel="describedby"; type="application/json"'
    return response
