"""The humans' view (docs/dashboard.md): server-rendered pages with htmx live regions.

Every page reads without JavaScript; with it, ``hx-boost`` turns links and forms into
in-page swaps and the live regions follow ``/live`` (``dashboard.live``). A request from
htmx for one region (``?partial=<name>``) gets just that named partial of the page's
template. Each action is parse → one operation (``coordination.core.operations``, the
checks and the service every door shares) → back to the page, with the outcome as a
flash message; domain errors become that message, never a 500.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template import TemplateDoesNotExist
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_POST

from coordination.core import access, glance, hub, operations, selectors, services
from coordination.core.errors import ArcError, Conflict, Invalid
from coordination.core.models import AgentKey, Message
from coordination.core.parsing import as_id, reject_nul, require_id
from dashboard import pictures
from dashboard.auth import DashboardRequest, operator_required

# The regions a page may be asked for alone (``?partial=``): each refreshes itself on ``sse:<event>``.
LIVE_REGIONS = frozenset(
    {"activity", "agent", "agents", "deliveries", "keys", "map", "roomstate", "rooms", "stats", "waiting", "work"}
)


def _who(request: DashboardRequest) -> access.Identity:
    return request.arc_identity


def _page(
    request: DashboardRequest, template: str, context: dict[str, Any], *, page: str, status: int = 200
) -> HttpResponse:
    """Render a page, or only its ``?partial=`` region when htmx asks for one."""
    partial = request.GET.get("partial")
    context = {"page": page, **context}
    if partial and request.htmx:
        # Only live regions: other partials (a message row) need a context only their page gives.
        if partial in LIVE_REGIONS:
            with contextlib.suppress(TemplateDoesNotExist):  # a region of another page
                return render(request, f"dashboard/{template}#{partial}", context, status=status)
        return HttpResponse(f"this page has no region {partial[:40]!r}", status=404, content_type="text/plain")
    return render(request, f"dashboard/{template}", context, status=status)


def _back(request: DashboardRequest, fallback: str) -> HttpResponseRedirect:
    """Back to the page the form was on (``next``), if it is one of ours."""
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = fallback
    return HttpResponseRedirect(target or fallback)


Action = Callable[..., str]  # (request, identity, *url arguments) -> the success message


def action(fallback: str) -> Callable[[Action], Callable[..., HttpResponse]]:
    """A dashboard action: POST only (with CSRF, by the middleware), signed in, its outcome flashed.

    The wrapped function does the access check and the one service call and returns
    the success message; an ``ArcError`` (the same the API answers with) becomes an
    error message. Either way the user lands back on the page the form was on.
    """

    def wrap(fn: Action) -> Callable[..., HttpResponse]:
        @operator_required
        @require_POST
        @functools.wraps(fn)
        def handler(request: DashboardRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                _reject_nul(request)
                done = fn(request, _who(request), *args, **kwargs)
            except ArcError as exc:
                messages.error(request, exc.message, extra_tags=f"status-{exc.status}")
            else:
                messages.success(request, done)
            return _back(request, reverse(fallback))

        return handler

    return wrap


def _reject_nul(request: DashboardRequest) -> None:
    """Form fields with NUL characters are refused, as in the API: PostgreSQL cannot store them."""
    reject_nul(list(request.POST.lists()), "form fields")


def _field(request: DashboardRequest, name: str, *, required: bool = True) -> str:
    value = request.POST.get(name, "").strip()
    if required and not value:
        raise Invalid(f"{name} is required")
    return value


def _int_field(request: DashboardRequest, name: str) -> int:
    raw = _field(request, name)
    number = as_id(raw)
    if number is None:
        raise Invalid(f"{name} must be a whole number, not {raw[:40]!r}")
    return number


# ── Overview ─────────────────────────────────────────────────────────────


def _roster() -> list[dict[str, Any]]:
    """The live agents; an A2A agent elsewhere carries its card's URL as ``a2a_card`` (from the hub's register of
    them, never from what an agent says of itself in its metadata)."""
    remote = {r.agent_id: r.card_url for r in selectors.remote_agents()}
    return [{**agent, "a2a_card": remote.get(agent["agent_id"])} for agent in services.sessions_roster()]


@operator_required
@require_GET
def overview(request: DashboardRequest) -> HttpResponse:
    region = request.GET.get("partial") if request.htmx else None
    if region in OVERVIEW_REGIONS:  # a live region asks again: only what it shows is read
        return _page(request, "overview.html", OVERVIEW_REGIONS[region](), page="overview")
    recent = [m.as_wire() for m in selectors.messages_recent(limit=50)]
    context = {
        "agents": _roster(),
        "rooms": selectors.rooms_list(),
        "claims": selectors.claims_list(active_only=True),
        "locks": selectors.locks_list(active_only=True),
        "recent": recent,
        "newest_id": recent[0]["id"] if recent else selectors.message_newest_id(),
        "waiting": [m.as_wire() for m in selectors.waiting_on(operator=access.OPERATOR)],
        "info": hub.hub_info(),
        **_activity_context("hour"),
    }
    return _page(request, "overview.html", context, page="overview")


OVERVIEW_REGIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "agents": lambda: {"agents": _roster()},
    "activity": lambda: _activity_context("hour"),
    "waiting": lambda: {"waiting": [m.as_wire() for m in selectors.waiting_on(operator=access.OPERATOR)]},
    "rooms": lambda: {"rooms": selectors.rooms_list()},
    "work": lambda: {
        "claims": selectors.claims_list(active_only=True),
        "locks": selectors.locks_list(active_only=True),
    },
}


def _activity_context(window: str, room: str | None = None) -> dict[str, Any]:
    seen = glance.activity(window=window, room=room)
    return {
        "activity": seen,
        "charts": [
            (seen.messages, pictures.sparkline(seen.messages, seen.starts)),
            (seen.opened, pictures.sparkline(seen.opened, seen.starts)),
            (seen.finished, pictures.sparkline(seen.finished, seen.starts)),
            (seen.lag_ms, pictures.sparkline(seen.lag_ms, seen.starts, unit=" ms")),
        ],
    }


@operator_required
@require_GET
def waiting(request: DashboardRequest) -> HttpResponse:
    rows = [m.as_wire() for m in selectors.waiting_on(operator=access.OPERATOR)]
    return _page(request, "waiting.html", {"waiting": rows}, page="waiting")


# ── Rooms, messages, threads ─────────────────────────────────────────────


@operator_required
@require_GET
def room(request: DashboardRequest, name: str) -> HttpResponse:
    try:
        room = selectors.room_get(name)
    except ArcError as exc:
        return _page(request, "missing.html", {"what": f"room {name}", "reason": exc.message}, page="", status=404)
    newest_id = selectors.message_newest_id()  # first: the live stream goes on from here, so nothing falls between
    rows = [m.as_wire() for m in selectors.room_messages(name=name, through=newest_id)]
    threads = sorted({m["thread_id"] for m in rows if m["thread_id"]})
    context = {
        "room": room,
        "rows": rows,
        "threads": threads,
        "newest_id": newest_id,
        "rooms": selectors.rooms_list(),
        **_activity_context("hour", room=name),
    }
    return _page(request, "room.html", context, page="room")


@action("dashboard:overview")
def room_post(request: DashboardRequest, who: access.Identity, name: str) -> str:
    """Post as the human, in a room (optionally into a thread, or as a reply)."""
    thread_id = request.POST.get("thread_id") or None  # as given: thread ids are kept verbatim, like the API
    reply_to = _int_field(request, "reply_to") if _field(request, "reply_to", required=False) else None
    return _post(request, who, channel=name, to_agent=None, thread_id=thread_id, reply_to=reply_to)


@action("dashboard:waiting")
def message_reply(request: DashboardRequest, who: access.Identity, message_id: int) -> str:
    """Reply to a message where it was asked: in its room and thread, or directly to its sender."""
    asked = selectors.message_get(require_id(message_id, "message_id")).as_wire()
    who.require_party(asked)
    # A direct message is answered to the other party (the recipient, if the operator sent it).
    other = asked["to_agent"] if asked["from_agent"] == who.agent_id else asked["from_agent"]
    return _post(
        request,
        who,
        channel=asked["channel"],
        to_agent=other if asked["to_agent"] is not None else None,
        thread_id=asked["thread_id"],
        reply_to=message_id,
    )


def _post(
    request: DashboardRequest,
    who: access.Identity,
    *,
    channel: str,
    to_agent: str | None,
    thread_id: str | None,
    reply_to: int | None,
) -> str:
    body = request.POST.get("body", "")
    expects = _field(request, "expects_reply", required=False) or "none"
    posted = operations.message_post(
        who,
        {
            "from_agent": who.agent_id or access.OPERATOR,
            "to_agent": to_agent,
            "channel": channel,
            "body": body,
            "thread_id": thread_id,
            "reply_to": reply_to,
            "expects_reply": expects,
        },
    )
    reached = posted.extra.get("recipients", 0)
    return f"Posted message {posted.result['id']}; it reached {reached} live agent{'' if reached == 1 else 's'}."


@action("dashboard:overview")
def reply_claim(request: DashboardRequest, who: access.Identity, message_id: int) -> str:
    """Take the reply to a message (``expects_reply``) as the human, as agents do."""
    taken = operations.reply_claim(who, message_id, {"agent_id": who.agent_id or access.OPERATOR})
    if taken.extra["acquired"]:
        return f"You will reply to message {message_id}."
    raise Conflict(f"{taken.result['reply_claimed_by']} already took the reply to message {message_id}")


@action("dashboard:overview")
def room_close(request: DashboardRequest, who: access.Identity, name: str) -> str:
    changed = operations.room_close(who, name).extra["changed"]
    return f"Closed #{name}." if changed else f"#{name} was already closed."


@action("dashboard:overview")
def room_reopen(request: DashboardRequest, who: access.Identity, name: str) -> str:
    changed = operations.room_reopen(who, name).extra["changed"]
    return f"Reopened #{name}." if changed else f"#{name} was already open."


@operator_required
@require_GET
def thread(request: DashboardRequest, thread_id: str) -> HttpResponse:
    newest_id = selectors.message_newest_id()  # first: the live stream goes on from here
    try:
        detail = selectors.thread_detail(thread_id=thread_id)
    except ArcError as exc:
        return _page(
            request, "missing.html", {"what": f"thread {thread_id}", "reason": exc.message}, page="", status=404
        )
    detail["messages"] = [m for m in detail["messages"] if m["id"] <= newest_id]  # later ones come live
    context = {"detail": detail, "thread_id": thread_id, "newest_id": newest_id}
    return _page(request, "thread.html", context, page="thread")


# ── Work: tasks, claims, locks ───────────────────────────────────────────


@operator_required
@require_GET
def work(request: DashboardRequest) -> HttpResponse:
    """The task board: a column per status, filtered by room, assignee and capability; finished ones paged."""
    filters = {name: (request.GET.get(name) or "").strip() for name in ("room", "assignee", "capability")}
    page = _page_number(request)
    newest_id = selectors.message_newest_id()  # first: the live stream goes on from here
    claims = selectors.claims_list(active_only=True)
    context = {
        "newest_id": newest_id,
        "columns": glance.task_board(**{k: v or None for k, v in filters.items()}, page=page),
        "filters": filters,
        "query": _board_query(filters, page),
        "filter_query": urlencode({k: v for k, v in filters.items() if v}),
        "here": reverse("dashboard:work") + (f"?{query}" if (query := _board_query(filters, page)) else ""),
        "rooms": selectors.rooms_list(),
        "claims": claims,
        "claim_of_task": {c.task_message_id: c for c in claims if c.task_message_id},
        "locks": selectors.locks_list(active_only=True),
    }
    return _page(request, "work.html", context, page="work")


def _board_query(filters: dict[str, str], page: int) -> str:
    return urlencode({**{k: v for k, v in filters.items() if v}, **({"page": str(page)} if page > 1 else {})})


def _page_number(request: DashboardRequest) -> int:
    """The ``?page=`` asked for; anything but a whole number from 1 is the first page (a link, not a form)."""
    number = as_id(request.GET.get("page") or "1")
    return 1 if number is None or number < 1 else min(number, 10_000)


@action("dashboard:work")
def task_act(request: DashboardRequest, who: access.Identity, task_id: int, verb: str) -> str:
    """Start, complete or fail a task as the operator (an admin may act on any task)."""
    if verb == "start":
        operations.task_start(who, task_id)
    elif verb == "complete":
        operations.task_complete(who, task_id)
    elif verb == "fail":
        reason = _field(request, "reason", required=False) or f"failed by {who.actor} in the dashboard"
        operations.task_fail(who, task_id, {"reason": reason})
    else:
        raise Invalid(f"unknown task action {verb[:40]!r} (start, complete or fail)")
    return f"Task {task_id}: {verb} done."


@action("dashboard:work")
def claim_release(request: DashboardRequest, who: access.Identity) -> str:
    key = _field(request, "claim_key")
    claim = operations.claim_force_release(who, key).result
    return f"Released claim {key}; {claim['owner_agent_id']} was told."


@action("dashboard:work")
def lock_release(request: DashboardRequest, who: access.Identity) -> str:
    path = _field(request, "file_path")
    lock = operations.lock_force_release(who, path).result
    return f"Released the lock on {path}; {lock['agent_id']} was told."


# ── Deliveries ───────────────────────────────────────────────────────────


@operator_required
@require_GET
def deliveries(request: DashboardRequest) -> HttpResponse:
    context = {
        "queues": selectors.deliveries_by_agent(),
        "dead": selectors.deliveries_list(state="failed", limit=200),
        "pending": selectors.deliveries_list(state="leased", limit=200),
    }
    return _page(request, "deliveries.html", context, page="deliveries")


@action("dashboard:deliveries")
def delivery_retry(request: DashboardRequest, who: access.Identity) -> str:
    message_id = _int_field(request, "message_id")
    agent_id = _field(request, "agent_id", required=False) or None
    retried = operations.deliveries_retry(who, {"message_ids": [message_id], "agent_id": agent_id}).result["retried"]
    if not retried:
        raise Invalid(f"message {message_id} has no dead letter to retry")
    return f"Queued message {message_id} again for {agent_id or 'its recipients'}."


# ── Keys ─────────────────────────────────────────────────────────────────


@operator_required
@require_GET
def keys(request: DashboardRequest) -> HttpResponse:
    return _page(request, "keys.html", _keys_context(), page="keys")


def _keys_context(**extra: Any) -> dict[str, Any]:
    return {
        "keys": selectors.keys_list(usable_only=False),
        "rooms": selectors.rooms_list(),
        "expiry_choices": list(AgentKey.EXPIRY_CHOICES),
        **extra,
    }


@operator_required
@require_POST
def key_mint(request: DashboardRequest) -> HttpResponse:
    """Mint a key; the page the answer redirects to is the only place its secret is ever shown."""
    who = _who(request)
    try:
        _reject_nul(request)
        key, plaintext = operations.key_mint(
            who,
            agent_id=_field(request, "agent_id"),
            rooms=request.POST.getlist("rooms"),
            expires=_field(request, "expires", required=False) or "24h",
            admin=request.POST.get("admin") == "on",
            label=_field(request, "label", required=False),
            by=request.user.get_username(),
        )
    except ArcError as exc:
        messages.error(request, exc.message, extra_tags=f"status-{exc.status}")
        return HttpResponseRedirect(reverse("dashboard:keys"))
    # Post, redirect, get: a reload of the page that shows the secret GETs it, and mints nothing.
    # The secret waits in the server-side session (never a cookie) for that one GET.
    request.session[MINTED] = {"key_id": key.prefix, "plaintext": plaintext}
    return HttpResponseRedirect(reverse("dashboard:key-minted"))


MINTED = "arc_minted_key"


@operator_required
@require_GET
def key_minted(request: DashboardRequest) -> HttpResponse:
    """The key just minted, shown this once (it leaves the session as it is shown), uncached."""
    minted = request.session.pop(MINTED, None)
    if not isinstance(minted, dict):
        messages.info(request, "A new key is shown once, on the page right after minting it; this one was.")
        return HttpResponseRedirect(reverse("dashboard:keys"))
    key = AgentKey.objects.filter(prefix=minted["key_id"]).first()
    response = _page(request, "keys.html", _keys_context(minted=key, plaintext=minted["plaintext"]), page="keys")
    response["Cache-Control"] = "no-store"  # the secret must not stay in any cache
    return response


@action("dashboard:keys")
def key_revoke(request: DashboardRequest, who: access.Identity, key_id: str) -> str:
    key = operations.key_revoke(who, key_id).result
    return f"Revoked key {key['key_id']} of {key['agent_id']}; its open streams and sockets are closed."


# ── Network and stats ────────────────────────────────────────────────────


@operator_required
@require_GET
def network(request: DashboardRequest) -> HttpResponse:
    context = {"allow_remote": services.remote_allowed(), "agents": services.sessions_roster(), "info": hub.hub_info()}
    return _page(request, "network.html", context, page="network")


@action("dashboard:network")
def network_set(request: DashboardRequest, who: access.Identity) -> str:
    allow = _field(request, "allow_remote") == "on"
    operations.network_set(who, {"allow_remote": allow})
    if allow:
        return "Remote access is on: clients on other machines may connect (with a key)."
    return "Remote access is off: only this machine may connect."


@operator_required
@require_GET
def stats(request: DashboardRequest) -> HttpResponse:
    window = _window(request)
    rooms = [r.name for r in selectors.rooms_list()[:ROOM_CHARTS]]
    context = {
        "stats": selectors.hub_stats(),
        "kinds": Message.Kind.values,
        "window": window,
        "windows": list(glance.WINDOWS),
        **_activity_context(window),
        "room_charts": _room_charts(rooms, window),
    }
    return _page(request, "stats.html", context, page="stats")


ROOM_CHARTS = 20  # rooms charted on the stats page (the first, by name)


def _window(request: DashboardRequest) -> str:
    """The ``?window=`` asked for (``hour`` or ``day``); anything else is the hour (a link, not a form)."""
    window = request.GET.get("window") or "hour"
    return window if window in glance.WINDOWS else "hour"


def _room_charts(rooms: list[str], window: str) -> list[tuple[str, tuple[glance.Series, SafeString]]]:
    starts, per_room = glance.rooms_activity(rooms, window=window)
    return [(name, (per_room[name], pictures.sparkline(per_room[name], starts))) for name in rooms]


# ── The agent map, one agent's page, search ──────────────────────────────


@operator_required
@require_GET
def agent_map(request: DashboardRequest) -> HttpResponse:
    window = _window(request)
    nodes, edges = glance.agent_traffic(window=window)
    context = {
        "window": window,
        "windows": list(glance.WINDOWS),
        "nodes": nodes,
        "edges": edges,
        "picture": pictures.agent_map(nodes, edges),
        "newest_id": selectors.message_newest_id(),
    }
    return _page(request, "map.html", context, page="map")


@operator_required
@require_GET
def agent(request: DashboardRequest, agent_id: str) -> HttpResponse:
    seen = glance.agent_page(agent_id)
    if not seen.known:
        reason = "no agent of that name has registered, sent, received or held anything here"
        return _page(request, "missing.html", {"what": f"agent {agent_id}", "reason": reason}, page="", status=404)
    context = {
        "seen": seen,
        "timeline": pictures.sparkline(seen.timeline, seen.starts),
        "here": reverse("dashboard:agent", args=[agent_id]),
        "newest_id": selectors.message_newest_id(),
    }
    return _page(request, "agent.html", context, page="agent")


@operator_required
@require_GET
def search(request: DashboardRequest) -> HttpResponse:
    """The API's full-text search (``GET /v1/search``), with its filters: room and author."""
    q = (request.GET.get("q") or "").strip()
    room = (request.GET.get("room") or "").strip() or None
    author = (request.GET.get("from_agent") or "").strip() or None
    results: list[dict[str, Any]] = []
    problem = ""
    if q:
        try:
            results = operations.search_messages(_who(request), q=q, channel=room, from_agent=author, limit=100).result
        except ArcError as exc:
            problem = exc.message
    context = {"q": q, "room": room or "", "from_agent": author or "", "results": results, "problem": problem}
    return _page(request, "search.html", context, page="search")
