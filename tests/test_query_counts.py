"""SQL statements on the hot paths: a post, a claim, a lease and a long-poll's wake (docs/performance.md).

Each count is the number of statements the hub runs today for one request, asserted
exactly, so a change that makes a hot path do more work fails here and says so (lower
the number when a change makes it do less). Counted on the database connection of
every thread of this process, so work done off the request's thread counts too.

Personas: ``alice`` posts and delegates, holding a key; ``bob`` is live, receives and leases.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator
from django.db import connection
from django.db.backends.utils import CursorWrapper

from arcsite.asgi import application
from coordination.core import events, feeds, hub, services
from coordination.core.feeds import DeliveryMarker, FeedFilter
from coordination.core.models import FeedCursor
from tests.conftest import ApiClient, Persona


@contextmanager
def statements() -> Iterator[list[tuple[str, str]]]:
    """Every SQL statement any thread of this process runs in the block: ``(thread name, sql)``."""
    seen: list[tuple[str, str]] = []
    real_execute, real_many = CursorWrapper.execute, CursorWrapper.executemany

    def execute(self: CursorWrapper, sql: Any, params: Any = None) -> Any:
        seen.append((threading.current_thread().name, str(sql)))
        return real_execute(self, sql, params)

    def executemany(self: CursorWrapper, sql: Any, param_list: Any) -> Any:
        seen.append((threading.current_thread().name, str(sql)))
        return real_many(self, sql, param_list)

    CursorWrapper.execute, CursorWrapper.executemany = execute, executemany  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        CursorWrapper.execute, CursorWrapper.executemany = real_execute, real_many  # type: ignore[method-assign]


def statement_count(seen: list[tuple[str, str]]) -> int:
    """Statements that do work: transaction control (``BEGIN``, savepoints of nested ``atomic``) is not counted."""
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT")
    return sum(1 for _, sql in seen if not sql.upper().startswith(control))


def sqlite_or_pg(sqlite: int, postgresql: int) -> int:
    """PostgreSQL takes an advisory lock a post holds (message order) that SQLite's single writer needs not."""
    return postgresql if connection.vendor == "postgresql" else sqlite


@pytest.fixture
def alice(db: None) -> Persona:
    services.rooms_ensure_defaults()
    return Persona("alice")


@pytest.fixture
def bob(db: None) -> ApiClient:
    client = ApiClient()
    status, _ = client.post("/v1/sessions", {"agent_id": "bob", "capabilities": ["review"]})
    assert status == 201
    return client


def warm(alice: Persona) -> None:
    """One post first, so the counts below are of a warm process (rooms seen, presence refreshed)."""
    assert alice.post("/v1/messages", {"channel": "general", "body": "warm up"})[0] == 201


def test_a_broadcast_post(alice, bob):
    warm(alice)
    with statements() as seen:
        status, _ = alice.post("/v1/messages", {"channel": "general", "body": "hello"})
    assert status == 201
    assert statement_count(seen) == sqlite_or_pg(4, 5), seen


def test_a_direct_message(alice, bob):
    warm(alice)
    with statements() as seen:
        status, _ = alice.post("/v1/messages", {"to_agent": "bob", "body": "for you"})
    assert status == 201
    assert statement_count(seen) == sqlite_or_pg(4, 5), seen


def test_a_claim(alice, bob):
    warm(alice)
    with statements() as seen:
        status, envelope = alice.post("/v1/claims", {"claim_key": "parser"})
    assert (status, envelope["acquired"]) == (201, True)
    assert statement_count(seen) == 6, seen


def test_a_lease_of_one_message(alice, bob):
    alice.post("/v1/messages", {"to_agent": "bob", "body": "work"})
    bob.post("/v1/inbox/bob/lease", {"max": 1})  # warm, and leaves nothing queued
    alice.post("/v1/messages", {"to_agent": "bob", "body": "more work"})
    with statements() as seen:
        status, envelope = bob.post("/v1/inbox/bob/lease", {"max": 1})
    assert (status, len(envelope["result"])) == (200, 1)
    assert statement_count(seen) == 5, seen


@pytest.mark.django_db(transaction=True)
async def test_a_long_poll_woken_by_a_post(monkeypatch):
    """From the post's commit to the answer, the waiting poll reads nothing: the event carries the message.

    What it runs is the delivery record, written after the answer left: the DM becomes
    ``delivered`` (a select and an update) and bob's feed cursor rises (an update, which finds
    no row the first time: a look and an insert).
    """
    monkeypatch.setattr(events, "dispatcher", events.Dispatcher())
    await sync_to_async(services.rooms_ensure_defaults)()
    await sync_to_async(services.session_create)(agent_id="bob")
    await sync_to_async(hub.instance_id)()  # the X-Arc-Instance stamp is read once per process, not per answer
    poll = ApplicationCommunicator(
        application,
        {
            "type": "http",
            "method": "GET",
            "path": "/v1/events",
            "query_string": b"agent_id=bob&since_id=0&timeout=30",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
        },
    )
    await poll.send_input({"type": "http.request", "body": b""})
    for _ in range(3000):  # until subscribed: from then on the post's event reaches it
        if events.dispatcher.listener_count:
            break
        await asyncio.sleep(0.01)
    with statements() as seen:

        def post() -> int:
            """Post, and count the statements so far in the same thread call: the wake's work, which
            shares this thread (sync_to_async is thread-sensitive), cannot start before the count."""
            services.message_post(from_agent="alice", to_agent="bob", body="wake up")
            return len(seen)

        posted = await sync_to_async(post)()
        start = await poll.receive_output(timeout=30)
        body = await poll.receive_output(timeout=30)
        for _ in range(3000):  # until the poll has unsubscribed, its work done
            if not events.dispatcher.listener_count:
                break
            await asyncio.sleep(0.01)
        await feeds.background_settled()  # the delivery record written after the answer
    assert start["status"] == 200
    assert [m["body"] for m in json.loads(body["body"])["result"]] == ["wake up"]
    assert statement_count(seen[posted:]) == 5, seen[posted:]


def _broadcast_shown_to(readers: list[str]) -> tuple[int, list[DeliveryMarker]]:
    services.rooms_ensure_defaults()
    message = services.message_post(from_agent="alice", channel="general", body="everyone")
    markers = [DeliveryMarker(FeedFilter(agent_id=reader)) for reader in readers]
    for marker in markers:
        marker.note([message.as_wire()], message.id)
    return message.id, markers


def _cursors_at(message_id: int) -> int:
    return FeedCursor.objects.filter(delivered_id=message_id).count()


@pytest.mark.django_db(transaction=True)
async def test_what_fifty_readers_were_shown_is_recorded_in_two_writes_not_fifty():
    """Records handed over while one write runs are written together by the next (``feeds._GroupWrite``)."""
    message_id, markers = await sync_to_async(_broadcast_shown_to)([f"reader-{n}" for n in range(50)])
    with statements() as seen:
        await asyncio.gather(*(marker.flush(force=True) for marker in markers))
    assert await sync_to_async(_cursors_at)(message_id) == 50
    # One write is the first reader's (a delivery look, a cursor update, an insert, an update);
    # the other 49 readers' records wait for it and go in the second. Per reader, it would be 200.
    assert statement_count(seen) <= 2 * 4, seen


@pytest.mark.django_db(transaction=True)
async def test_a_reader_waiting_on_a_cancelled_writer_writes_the_records_itself():
    message_id, (first, second) = await sync_to_async(_broadcast_shown_to)(["first", "second"])
    leading = asyncio.create_task(first.flush(force=True))
    await asyncio.sleep(0)  # the first reader is writing (its batch in the thread)
    waiting = asyncio.create_task(second.flush(force=True))
    await asyncio.sleep(0)  # the second waits for the next batch
    leading.cancel()  # (a stream whose client went away)
    await asyncio.wait_for(waiting, 30)
    assert await sync_to_async(_cursors_at)(message_id) == 2
