"""Small display helpers for the dashboard's templates. Each returns plain text (autoescape applies), but
``agent``, which builds its link with ``format_html`` (the name escaped in it)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """An attachment's JSON content, indented for a ``<pre>``."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@register.filter
def short_ts(value: Any) -> str:
    """``2026-11-22T01:02:03.456789+00:00`` → ``2026-11-22 01:02:03`` (wire timestamps are ISO text)."""
    text = str(value or "")
    return text[:19].replace("T", " ")


@register.filter
def agent(name: Any) -> str:
    """An agent's name as a link to its page (``/agents/<name>``), escaped; nothing for no name."""
    if not name:
        return ""
    return format_html('<a class="agent" href="{}">{}</a>', reverse("dashboard:agent", args=[str(name)]), name)


@register.filter
def age(value: Any) -> str:
    """How long ago a datetime was: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    if not isinstance(value, datetime):
        return ""
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """``mapping[key]`` (``None`` when absent): a dict looked up by a variable, which templates cannot."""
    return mapping.get(key) if isinstance(mapping, dict) else None
