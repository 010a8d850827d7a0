"""The humans' view. For now one read-only page, server-rendered (no JavaScript needed)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

from coordination import hub, selectors
from coordination.api import manifest


def overview(request: HttpRequest) -> HttpResponse:
    # An agent asking for the manifest (SPEC 2) gets it; anyone else gets the page.
    response = manifest.manifest_response(request) if manifest.wants_json(request) else _overview_page(request)
    # The answer depends on Accept; the Link header tells any client where the manifest is.
    patch_vary_headers(response, ["Accept"])
    response["Link"] = '</v1/manifest>; rel="describedby"; type="application/json"'
    return response


def _overview_page(request: HttpRequest) -> HttpResponse:
    context = {
        "agents": selectors.agents_live(),
        "rooms": selectors.rooms_list(),
        "claims": selectors.claims_list(active_only=True),
        "locks": selectors.locks_list(active_only=True),
        "recent": selectors.messages_recent(limit=50),
        "info": hub.hub_info(),
    }
    return render(request, "dashboard/overview.html", context)
