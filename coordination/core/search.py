"""Full-text search over message bodies (``GET /v1/search``, docs/protocol.md).

The index lives in the database, built by migration ``0006_message_search``:

- **SQLite**: an FTS5 table ``coordination_message_fts`` over ``coordination_message.body``
  (external content keyed by message id, kept in step by triggers); ranked by ``bm25``.
- **PostgreSQL**: a GIN index on ``SEARCH_VECTOR_SQL`` below; ranked by ``ts_rank``.

Both split text into words at anything that is not a letter or a digit (so ``src/parser.py``
is ``src parser py`` and ``foo_bar`` is ``foo bar``) and neither stems, so the two backends
find the same messages for the same words. SQLite also folds accents (``cafe`` finds ``café``);
PostgreSQL does not.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import connection

from coordination.core.access import Identity
from coordination.core.errors import Invalid
from coordination.core.models import Message

MAX_QUERY_CHARS = 1000
MAX_QUERY_WORDS = 32

FTS_TABLE = "coordination_message_fts"
# Must stay character for character the expression indexed by migration 0006, or
# PostgreSQL cannot use the index (tests/test_search.py checks that it does).
SEARCH_VECTOR_SQL = "to_tsvector('simple', regexp_replace({body}, '[^[:alnum:]]+', ' ', 'g'))"

# A word: a run of letters and digits (``str.isalnum``); everything else separates words.
_WORD = re.compile(r"[^\W_]+")


def query_words(q: str) -> tuple[list[str], bool]:
    """The words of query text ``q``, and whether the last one is also matched as a prefix.

    Only letters and digits survive, so no character of ``q`` ever reaches the
    database's query syntax. Raises ``Invalid`` for text that cannot be searched.
    """
    if not q.strip():
        raise Invalid("q query parameter is required: the words to search message bodies for")
    if len(q) > MAX_QUERY_CHARS:
        raise Invalid(f"q must be at most {MAX_QUERY_CHARS} characters")
    words = _WORD.findall(q)
    if not words:
        raise Invalid("q has no words to search for: give at least one letter or digit")
    if len(words) > MAX_QUERY_WORDS:
        raise Invalid(f"q has {len(words)} words; at most {MAX_QUERY_WORDS} are searched together")
    return words, not q[-1].isspace()


def messages_search(
    *,
    q: str,
    reader: Identity,
    channel: str | None = None,
    from_agent: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Messages whose body has every word of ``q``, as ``reader`` may see them, best match first.

    Semantics:

    - words are runs of letters and digits; punctuation and search-engine syntax
      (``"``, ``*``, ``-``, ``AND``/``OR``/``NEAR(``...) are plain separators or plain words;
    - every word must occur in the body (AND), case-insensitively, in any order; characters
      are compared as sent (no Unicode normalization);
    - the last word also matches as a prefix (``depl`` finds ``deploy``), unless ``q``
      ends with whitespace (``"cat "`` finds ``cat``, not ``category``);
    - ``channel`` and ``from_agent`` narrow the results (exact match).

    Order: best match first (``bm25`` on SQLite, ``ts_rank`` on PostgreSQL), then newest.
    ``limit`` is capped at ``ARC_MAX_QUERY_LIMIT``.

    Visibility is ``Identity.may_read`` in SQL: a reader not bound to an agent (an unkeyed
    loopback client) sees every message, direct ones too, as in ``/v1/threads/{id}``; a
    keyed agent sees broadcasts in its key's rooms plus every message it sent or received.
    Raises ``Invalid`` (400) for text that cannot be searched, ``Forbidden`` (403) for a
    ``channel`` outside the reader's rooms.
    """
    reader.require_room(channel)
    words, prefix = query_words(q)
    limit = max(1, min(limit, settings.ARC_MAX_QUERY_LIMIT))
    where, params = _visible_sql(reader, channel=channel, from_agent=from_agent)
    if connection.vendor == "postgresql":
        sql, match = _postgresql_sql(where), _tsquery(words, prefix)
    elif connection.vendor == "sqlite":
        sql, match = _sqlite_sql(where), _fts5_query(words, prefix)
    else:  # the hub runs on these two only (settings refuses any other database)
        raise NotImplementedError(f"search is not available on {connection.vendor}")
    return [m.as_wire() for m in Message.objects.raw(sql, [match, *params, limit])]


def _fts5_query(words: list[str], prefix: bool) -> str:
    """An FTS5 query: each word a quoted string (never an operator), implicitly ANDed.

    Words hold only letters and digits, so they contain no ``"`` to escape.
    """
    terms = [f'"{word}"' for word in words]
    if prefix:
        terms[-1] += " *"
    return " ".join(terms)


def _tsquery(words: list[str], prefix: bool) -> str:
    """A ``to_tsquery`` text: each word a quoted lexeme, ANDed; ``:*`` makes the last a prefix.

    Words hold only letters and digits, so they contain no ``'`` or ``\\`` to escape.
    """
    terms = [f"'{word}'" for word in words]
    if prefix:
        terms[-1] += ":*"
    return " & ".join(terms)


def _visible_sql(reader: Identity, *, channel: str | None, from_agent: str | None) -> tuple[str, list[Any]]:
    """SQL conditions on ``m`` (the message table) for the filters and ``Identity.may_read``."""
    clauses: list[str] = []
    params: list[Any] = []
    if channel is not None:
        clauses.append("m.channel = %s")
        params.append(channel)
    if from_agent is not None:
        clauses.append("m.from_agent = %s")
        params.append(from_agent)
    if reader.bound and not reader.admin:
        # may_read: an admin reads every message; anyone else its own messages (sent or received), and broadcasts in its rooms.
        rooms = sorted(reader.rooms)  # none: every room
        broadcast = "m.to_agent IS NULL"
        if rooms:
            broadcast += f" AND m.channel IN ({', '.join(['%s'] * len(rooms))})"
        clauses.append(f"(m.from_agent = %s OR m.to_agent = %s OR ({broadcast}))")
        params += [reader.agent_id, reader.agent_id, *rooms]
    return "".join(f" AND {clause}" for clause in clauses), params


def _sqlite_sql(where: str) -> str:
    table = Message._meta.db_table
    return (
        f"SELECT m.* FROM {FTS_TABLE} JOIN {table} m ON m.id = {FTS_TABLE}.rowid"
        f" WHERE {FTS_TABLE} MATCH %s{where}"
        # bm25: lower is better.
        f" ORDER BY bm25({FTS_TABLE}), m.id DESC LIMIT %s"
    )


def _postgresql_sql(where: str) -> str:
    table = Message._meta.db_table
    vector = SEARCH_VECTOR_SQL.format(body="m.body")
    return (
        f"SELECT m.* FROM {table} m, to_tsquery('simple', %s) query"
        f" WHERE {vector} @@ query{where}"
        # Normalization 1 (divide by 1 + log(length)): shorter bodies win ties, as with bm25.
        f" ORDER BY ts_rank({vector}, query, 1) DESC, m.id DESC LIMIT %s"
    )
