"""Pictures the server draws as SVG for the dashboard (docs/dashboard.md): sparkline bars and the agent map.

No JavaScript and no library: SVG text in the page, so a picture renders offline, in every browser, and
is read by a screen reader through its ``<title>``. Every name and label an agent chose goes through
``escape`` (``format_html``), so a hostile agent name stays text inside the SVG as it does in a table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from coordination.core.glance import Edge, Node, Series

LABEL_CHARS = 22


def sparkline(
    series: Series, starts: Sequence[datetime], *, unit: str = "", width: int = 240, height: int = 40
) -> SafeString:
    """Bars, one per bucket, scaled to the largest; an empty bucket is a gap (none drawn). Its ``<title>``
    says what it shows, the total (or the median, for a lag) and the busiest bucket."""
    values = list(series.values)
    top = max((v for v in values if v is not None), default=0) or 0
    n = max(1, len(values))
    step = width / n
    bars = []
    for i, value in enumerate(values):
        if not value:
            continue
        h = max(1.0, (value / top) * (height - 2)) if top else 0.0
        when = starts[i].strftime("%H:%M") if i < len(starts) else ""
        bars.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}"><title>{} {}: {}{}</title></rect>',
                f"{i * step:.1f}",
                f"{height - h:.1f}",
                f"{max(1.0, step - 1):.1f}",
                f"{h:.1f}",
                when,
                series.label,
                _number(value),
                unit,
            )
        )
    if top:
        summary = f"{series.label}: {_number(series.total)}{unit} in all, at most {_number(top)}{unit} in one bucket"
    else:
        summary = f"{series.label}: none in this window"
    return format_html(
        '<svg class="spark" role="img" viewBox="0 0 {} {}" width="{}" height="{}" preserveAspectRatio="none">'
        '<title>{}</title><line class="base" x1="0" y1="{}" x2="{}" y2="{}"></line>{}</svg>',
        width,
        height,
        width,
        height,
        summary,
        height - 0.5,
        width,
        height - 0.5,
        mark_safe("".join(bars)),  # each one built by format_html above
    )


def agent_map(nodes: Sequence[Node], edges: Sequence[Edge], *, size: int = 560) -> SafeString:
    """Agents on a circle (live ones filled), each a link to its page, and a line from each sender to each
    receiver as thick as the traffic between them, its ``<title>`` the counts."""
    if not nodes:
        return format_html(
            '<svg class="map" role="img" viewBox="0 0 {} 60" width="{}" height="60"><title>No agents to show.</title>'
            '<text x="12" y="34">No agents live or seen in this window.</text></svg>',
            size,
            size,
        )
    center, radius = size / 2, size / 2 - 70
    at: dict[str, tuple[float, float]] = {}
    for i, node in enumerate(nodes):
        angle = -math.pi / 2 + 2 * math.pi * i / len(nodes)
        at[node.agent_id] = (center + radius * math.cos(angle), center + radius * math.sin(angle))
    heaviest = max((e.weight for e in edges), default=1) or 1
    lines = format_html_join(
        "",
        '<line class="edge" x1="{}" y1="{}" x2="{}" y2="{}" stroke-width="{}" marker-end="url(#arrow)">'
        "<title>{} → {}: {}</title></line>",
        (
            (
                *_ends(at[e.source], at[e.target]),
                f"{1 + 5 * e.weight / heaviest:.1f}",
                e.source,
                e.target,
                _counts(e),
            )
            for e in edges
            if e.source != e.target
        ),
    )
    dots = format_html_join(
        "",
        '<a href="{}"><g class="node{}"><circle cx="{}" cy="{}" r="9"></circle>'
        '<text x="{}" y="{}" text-anchor="{}">{}</text><title>{} ({}): sent {}, received {}</title></g></a>',
        (
            (
                reverse("dashboard:agent", args=[n.agent_id]),
                " live" if n.live else "",
                f"{at[n.agent_id][0]:.1f}",
                f"{at[n.agent_id][1]:.1f}",
                f"{at[n.agent_id][0] + (14 if at[n.agent_id][0] >= center else -14):.1f}",
                f"{at[n.agent_id][1] + 4:.1f}",
                "start" if at[n.agent_id][0] >= center else "end",
                _label(n.agent_id),
                n.agent_id,
                "live" if n.live else "not live",
                n.sent,
                n.received,
            )
            for n in nodes
        ),
    )
    live = sum(n.live for n in nodes)
    title = f"{len(nodes)} agents ({live} live) and {len(edges)} lines of traffic between them"
    return format_html(
        '<svg class="map" role="group" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}"><title>{}</title>'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"></path></marker></defs>{}{}</svg>',
        title,
        size,
        size,
        size,
        size,
        title,
        lines,
        dots,
    )


def _ends(
    start: tuple[float, float], end: tuple[float, float], gap: float = 13.0, side: float = 4.0
) -> tuple[str, str, str, str]:
    """A line from one dot to another, stopped short of both (so its arrow shows) and moved a little to its
    left, so that the line back (its own left) is drawn beside it, not on it."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    ox, oy = uy * side, -ux * side
    x1, y1 = start[0] + ux * gap + ox, start[1] + uy * gap + oy
    x2, y2 = end[0] - ux * gap + ox, end[1] - uy * gap + oy
    return f"{x1:.1f}", f"{y1:.1f}", f"{x2:.1f}", f"{y2:.1f}"


def _counts(edge: Edge) -> str:
    parts = [(edge.direct, "direct message"), (edge.tasks, "task request"), (edge.results, "task result")]
    return ", ".join(f"{n} {name}{'s' if n != 1 else ''}" for n, name in parts if n)


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() or value >= 100 else f"{value:.1f}"
