"""Full-text search over message bodies (``GET /v1/search``, ``coordination.search``).

SQLite: an FTS5 table over ``coordination_message.body`` with external content (the index
keeps no second copy of the text, only the words, keyed by message id), kept in step by
triggers on insert, update and delete, and filled with the messages already there.

PostgreSQL: a GIN index on the body's ``tsvector``. The ``simple`` configuration, not
``english``: agents write code, paths, identifiers and many languages, which English
stemming and stop words would mangle (``the`` or ``is`` could never be found, ``running``
would find ``run``); and SQLite's tokenizer does not stem either, so both backends find
the same messages. Punctuation is turned into spaces first, so ``src/parser.py`` is
indexed as ``src parser py`` as on SQLite, not as one file-path token.

Caution for later migrations: on SQLite, an ``AlterField`` (or anything else that makes
Django rebuild ``coordination_message``) drops these triggers with the old table. Such a
migration must create ``SQLITE_TRIGGERS`` again (``tests/test_search.py`` checks that the
triggers exist after all migrations).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import migrations

TABLE = "coordination_message"
FTS = "coordination_message_fts"

SQLITE_TRIGGERS = [
    f"CREATE TRIGGER {FTS}_insert AFTER INSERT ON {TABLE} BEGIN"
    f" INSERT INTO {FTS}(rowid, body) VALUES (new.id, new.body); END",
    # External content: FTS5 removes a row's words given the text they were indexed from.
    f"CREATE TRIGGER {FTS}_delete AFTER DELETE ON {TABLE} BEGIN"
    f" INSERT INTO {FTS}({FTS}, rowid, body) VALUES ('delete', old.id, old.body); END",
    # Only when the body (or the id) changes: reply-claims and other updates leave the index alone.
    f"CREATE TRIGGER {FTS}_update AFTER UPDATE OF id, body ON {TABLE} BEGIN"
    f" INSERT INTO {FTS}({FTS}, rowid, body) VALUES ('delete', old.id, old.body);"
    f" INSERT INTO {FTS}(rowid, body) VALUES (new.id, new.body); END",
]
SQLITE_CREATE = [
    f"CREATE VIRTUAL TABLE {FTS} USING fts5("
    f"body, content='{TABLE}', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    *SQLITE_TRIGGERS,
    # The messages posted before this migration.
    f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {FTS}_insert",
    f"DROP TRIGGER IF EXISTS {FTS}_delete",
    f"DROP TRIGGER IF EXISTS {FTS}_update",
    f"DROP TABLE IF EXISTS {FTS}",
]

# Must match coordination.search.SEARCH_VECTOR_SQL character for character.
POSTGRESQL_CREATE = [
    f"CREATE INDEX coordination_message_body_search ON {TABLE} USING GIN "
    f"((to_tsvector('simple', regexp_replace(body, '[^[:alnum:]]+', ' ', 'g'))))",
]
POSTGRESQL_DROP = ["DROP INDEX IF EXISTS coordination_message_body_search"]


def require_fts5() -> None:
    """Fail clearly when this Python's SQLite was built without FTS5."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE fts5_probe USING fts5(body)")
    except sqlite3.OperationalError as exc:
        raise ImproperlyConfigured(
            f"message search needs SQLite's FTS5 extension, which the SQLite {sqlite3.sqlite_version} "
            f"in this Python lacks ({exc}). Use a Python whose sqlite3 module has FTS5 (python.org and "
            "most Linux distributions' builds do), or run the hub on PostgreSQL (ARC_DATABASE_URL)."
        ) from exc
    finally:
        probe.close()


def _run(schema_editor: Any, statements: dict[str, list[str]]) -> None:
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql)


def create_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "sqlite":
        require_fts5()
    _run(schema_editor, {"sqlite": SQLITE_CREATE, "postgresql": POSTGRESQL_CREATE})


def drop_index(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, {"sqlite": SQLITE_DROP, "postgresql": POSTGRESQL_DROP})


class Migration(migrations.Migration):
    dependencies = [("coordination", "0005_lease_expiry_notices")]
    operations = [migrations.RunPython(create_index, drop_index)]
