"""Small display helpers for the dashboard's templates. Each returns plain text: autoescape applies."""

from __future__ import annotations

import json
from typing import Any

from django import template

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
