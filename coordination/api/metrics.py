"""``GET /metrics``: the hub's counts in Prometheus text format (admins, or anyone on loopback)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from coordination.api import envelope
from coordination.core import access, events, selectors
from coordination.core.errors import ArcError, Forbidden


def metrics(request: HttpRequest) -> HttpResponse:
    client = request.META.get("REMOTE_ADDR")
    try:
        who = access.resolve(authorization=request.headers.get("Authorization"), client=client)
        if not (who.loopback or who.admin):
            raise Forbidden("metrics are for loopback clients or admin keys")
    except ArcError as exc:
        return envelope.from_exception(exc)
    return HttpResponse(render(selectors.hub_stats()), content_type="text/plain; version=0.0.4; charset=utf-8")


def render(stats: dict[str, object]) -> str:
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, object]]) -> None:
        lines.append(f"# HELP arc_{name} {help_text}")
        lines.append(f"# TYPE arc_{name} gauge")
        lines.extend(f"arc_{name}{labels} {value}" for labels, value in samples)

    agents = stats["agents"]
    assert isinstance(agents, dict)
    gauge("messages", "Messages stored.", [("", stats["messages"])])
    gauge(
        "agents",
        "Agents with an active session, live or idle (past the presence TTL).",
        [(f'{{state="{k}"}}', v) for k, v in sorted(agents.items())],
    )
    for name, label, help_text in (
        ("deliveries", "state", "Direct-message deliveries by state."),
        ("tasks", "status", "Tasks by status."),
    ):
        counts = stats[name]
        assert isinstance(counts, dict)
        gauge(
            name,
            help_text,
            [(f'{{{label}="{k}"}}', v) for k, v in sorted(counts.items())] or [(f'{{{label}="none"}}', 0)],
        )
    gauge("claims_active", "Claims held and not expired.", [("", stats["claims_active"])])
    gauge("locks_active", "File locks held and not expired.", [("", stats["locks_active"])])
    gauge("rooms", "Rooms.", [("", stats["rooms"])])
    gauge(
        "event_listeners",
        "Waiting readers (long-polls, streams, sockets) in this process.",
        [("", events.dispatcher.listener_count)],
    )
    return "\n".join(lines) + "\n"
