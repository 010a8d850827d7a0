"""The hub process: its identity (``X-Arc-Instance``, hub-info) and its shutdown timer.

Identity is a property of the database, so every worker on one database reports
the same ``instance_id``. The shutdown timer belongs to this process, as in Arc:
``POST /v1/shutdown`` stops the worker that received it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection

from coordination.core import services
from coordination.core.errors import Invalid

log = logging.getLogger("arc.hub")

MAX_SHUTDOWN_DELAY_SEC = 3600


def storage_path() -> str:
    """Where the hub keeps its data: the SQLite file, or the PostgreSQL URL without credentials."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return str(db["NAME"])
    return f"postgresql://{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


_instance_id: str | None = None


def instance_id() -> str:
    """Arc's opaque, stable hub identifier: a digest of the storage and its birth marker."""
    global _instance_id
    if _instance_id is None:
        material = f"{storage_path()}|{services.hub_state().birth_marker}".encode()
        _instance_id = f"mh1-{hashlib.sha256(material).hexdigest()[:20]}"
    return _instance_id


def cached_instance_id() -> str | None:
    """The instance id if this process has computed it (safe to call from async code)."""
    return _instance_id


def forget_instance_id() -> None:
    """Drop the cached id (tests that recreate the database call this)."""
    global _instance_id
    _instance_id = None


def journal_mode() -> str:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            row = cursor.fetchone()
        return str(row[0]).lower() if row else "unknown"
    return "postgresql"


def hub_info() -> dict[str, Any]:
    mode = journal_mode()
    return {
        "storage_path": storage_path(),
        "instance_id": instance_id(),
        "journal_mode": mode,
        # PostgreSQL always writes ahead; SQLite only when the WAL pragma took.
        "wal_mode": mode in {"wal", "postgresql"},
        "database": connection.vendor,
        "default_channel": "general",
        "max_body_chars": settings.ARC_MAX_BODY_CHARS,
        "max_attachment_chars": settings.ARC_MAX_ATTACHMENT_CHARS,
        "max_attachments": settings.ARC_MAX_ATTACHMENTS,
        "max_query_limit": settings.ARC_MAX_QUERY_LIMIT,
        "presence_ttl_sec": settings.ARC_PRESENCE_TTL_SEC,
        "allow_remote": services.remote_allowed(),
    }


class ShutdownTimer:
    """A delayed, cancellable stop of this process, announced in ``general`` as in Arc."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._deadline: float | None = None
        self._delay: int | None = None

    def status(self) -> dict[str, int] | None:
        with self._lock:
            if self._deadline is None or self._delay is None:
                return None
            return {"remaining_sec": max(0, int(self._deadline - time.monotonic())), "delay_sec": self._delay}

    def start(self, delay_sec: int) -> dict[str, int] | None:
        if not 0 <= delay_sec <= MAX_SHUTDOWN_DELAY_SEC:
            raise Invalid(f"delay_sec must be between 0 and {MAX_SHUTDOWN_DELAY_SEC}")
        with self._lock:
            if self._deadline is not None:
                raise Invalid("shutdown already pending")
            self._delay = delay_sec
            self._deadline = time.monotonic() + delay_sec
            self._timer = threading.Timer(delay_sec, self._fire)
            self._timer.daemon = True
        if delay_sec == 0:
            _notice("Hub is shutting down now.", {"shutdown": True, "delay_sec": 0})
        else:
            _notice(
                f"Hub shutdown initiated. Shutting down in {delay_sec} seconds.",
                {"shutdown": True, "delay_sec": delay_sec},
            )
        log.info("shutdown initiated (delay=%ss)", delay_sec)
        self._timer.start()
        return self.status()

    def cancel(self) -> None:
        with self._lock:
            if self._deadline is None:
                raise Invalid("no shutdown pending")
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._deadline = None
            self._delay = None
        _notice("Hub shutdown cancelled.", {"shutdown_cancelled": True})
        log.info("shutdown cancelled")

    def _fire(self) -> None:
        with self._lock:
            if self._deadline is None:
                return
            delay = self._delay
        if delay:
            try:
                _notice("Hub is shutting down now.", {"shutdown": True, "final": True})
            finally:
                connection.close()  # this timer thread's own connection
        log.info("executing shutdown")
        # The serving command turns SIGTERM into a clean stop (pidfile removed).
        os.kill(os.getpid(), signal.SIGTERM)


def _notice(body: str, metadata: dict[str, Any]) -> None:
    services.message_post(
        from_agent=services.SYSTEM_AGENT, channel="general", kind="notice", body=body, metadata=metadata, touch=False
    )


shutdown = ShutdownTimer()
