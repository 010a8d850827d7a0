"""What the services need from the database beyond the ORM: transaction-scoped advisory locks."""

from __future__ import annotations

from django.db import connection

# PostgreSQL hands out sequence values at INSERT but makes rows visible at COMMIT,
# so two concurrent posts can become visible out of id order and a `since_id`
# poller would skip the earlier one. One transaction-scoped advisory lock around
# the insert makes commit order equal id order. (SQLite has one writer anyway.)
MESSAGE_ORDER_LOCK = "message-order"


def serialize_on(key: str) -> None:
    """Hold a PostgreSQL transaction-scoped advisory lock on ``key`` (no-op on SQLite's single writer)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])
