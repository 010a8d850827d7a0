#!/usr/bin/env python3
"""What a kept idempotency answer costs on disk: keyed posts into a fresh hub storage, the table's size before and after.

    .venv/bin/python scripts/idempotency_storage.py [--posts 1000]
    ARC_DATABASE_URL=postgres://postgres@127.0.0.1:5432/scratch .venv/bin/python scripts/idempotency_storage.py

On SQLite (the default) it uses a temporary ARC_HOME; on PostgreSQL the database in
ARC_DATABASE_URL, whose idempotency records it deletes first. Each post goes through the
hub's own REST view (Django's test client) with a fresh ``Idempotency-Key``. Prints the
bytes per record, indexes included (SQLite's ``dbstat``, PostgreSQL's
``pg_total_relation_size``). docs/protocol.md quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = "coordination_idempotencyrecord"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1000, help="keyed posts to send (default 1000)")
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("ARC_HOME", tempfile.mkdtemp(prefix="arc-idem-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arcsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from coordination.core.models import IdempotencyRecord

    def size() -> int:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cursor.execute(
                    "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat"
                    " WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = %s)",
                    [TABLE],
                )
            else:
                cursor.execute("SELECT pg_total_relation_size(%s)", [TABLE])
            return int(cursor.fetchone()[0])

    call_command("migrate", verbosity=0)
    IdempotencyRecord.objects.all().delete()
    before = size()
    client = Client()
    for number in range(options.posts):
        body = {"from_agent": "alice", "channel": "general", "body": f"status update {number}: build green on main"}
        response = client.post(
            "/v1/messages",
            json.dumps(body),
            content_type="application/json",
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if response.status_code != 201:
            print(f"post {number} answered {response.status_code}: {response.content[:200]!r}", file=sys.stderr)
            return 1
    after = size()
    answer = len(json.dumps(IdempotencyRecord.objects.first().answer))  # type: ignore[union-attr]
    print(
        json.dumps(
            {
                "database": connection.vendor,
                "records": IdempotencyRecord.objects.count(),
                "bytes_per_record": round((after - before) / options.posts),
                "answer_bytes": answer,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
