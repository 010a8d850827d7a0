"""Arc's response envelopes: ``{"ok": true, "result": ...}`` and ``{"ok": false, "error": "..."}``."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from coordination.core.errors import ArcError
from coordination.core.operations import Answer


def ok(result: Any, status: int = 200, **extra: Any) -> JsonResponse:
    """A success envelope; ``extra`` adds top-level keys (Arc's ``acquired``, ``parent_completed``)."""
    payload: dict[str, Any] = {"ok": True}
    payload.update(extra)
    payload["result"] = result
    return JsonResponse(payload, status=status, json_dumps_params={"ensure_ascii": False})


def error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"ok": False, "error": message}, status=status, json_dumps_params={"ensure_ascii": False})


def from_exception(exc: ArcError) -> JsonResponse:
    response = error(exc.message, exc.status)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def answer(outcome: Answer) -> JsonResponse:
    """An operation's ``Answer`` as Arc's success envelope; a replayed one says so in a header too."""
    response = ok(outcome.result, outcome.status, **outcome.extra)
    if outcome.extra.get("replayed"):
        response["Idempotent-Replayed"] = "true"
    return response


def idempotency_key(request: Any) -> str | None:
    """The ``Idempotency-Key`` a request carries, if any (docs/protocol.md, "Retries")."""
    return request.headers.get("Idempotency-Key") or None
