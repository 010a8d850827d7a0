"""The humans' view. For now one read-only page, server-rendered (no JavaScript needed)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from coordination import hub, selectors


def overview(request: HttpRequest) -> HttpResponse:
    context = {
        "agents": selectors.agents_live(),
        "rooms": selectors.rooms_list(),
        "claims": selectors.claims_list(active_only=True),
        "locks": selectors.locks_list(active_only=True),
        "recent": selectors.messages_recent(limit=50),
        "info": hub.hub_info(),
    }
    return render(request, "dashboard/overview.html", context)
