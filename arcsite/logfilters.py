"""Filters for the hub's log (``LOGGING`` in settings)."""

from __future__ import annotations

import logging

# What the A2A SDK logs with a traceback when a client's request does not parse: the client's mistake,
# answered with the protocol's error (InvalidRequest, InvalidParams), not the hub's.
CLIENT_MISTAKES = frozenset({"Failed to parse request params", "Failed to validate base JSON-RPC request"})


class ClientMistakeOneLine(logging.Filter):
    """A bad request's parse failure as one line (its reason), not a traceback at ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in CLIENT_MISTAKES and record.exc_info:
            reason = record.exc_info[1]
            record.msg = f"{record.msg} (answered with the protocol's error): {reason}"
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
