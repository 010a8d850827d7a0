"""The one place where exceptions become Arc error envelopes on the REST edge."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse
from rest_framework import exceptions as drf

from coordination.api import envelope
from coordination.core.errors import ArcError

log = logging.getLogger("arc.api")


def response_for(exc: BaseException) -> HttpResponse:
    """Map any exception raised while serving a request to an envelope response."""
    if isinstance(exc, ArcError):
        return envelope.from_exception(exc)
    if isinstance(exc, RequestDataTooBig):
        return envelope.error("request body exceeds max size", 413)
    if isinstance(exc, Http404):
        return envelope.error("not found", 404)
    if isinstance(exc, drf.APIException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return envelope.error(detail, exc.status_code)
    log.exception("unhandled error", exc_info=exc)
    return envelope.error("internal error: the hub failed to handle this request; it has been logged", 500)


def arc_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    return response_for(exc)
