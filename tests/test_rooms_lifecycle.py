"""Room lifecycle (docs/protocol.md): an admin closes a room, posts to it get 409, waiting readers are told.

Closing goes through ``services.room_close`` / ``room_reopen`` from every edge: REST
(``POST /v1/channels/<name>/close`` and ``/reopen``), the Python client and the Django
admin. Waiting readers learn it at once: long-polls answer ``room_closed: true``, SSE
streams get ``event: room`` (a stream of just that room then ends), sockets an ``event``
frame. The closed state is read from the database on every post, so a close through one
hub process holds in every other.

Personas:
- ``root``: holds an admin key; may close and reopen rooms;
- ``alice``: an agent with an ordinary key; posts in rooms, may not close them;
- ``bob``: a worker on loopback without a key (Arc's way): may post, read and wait, but is
  no admin either;
- ``carol``: a bystander who keeps getting direct messages in a closed room.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import connection
from django.test import AsyncClient, Client
from django.utils import timezone

from arcsite.asgi import application
from coordination.client import ArcClient
from coordination.client import ArcError as ClientError
from coordination.core import events, services
from coordination.core.errors import Conflict, Invalid, NotFound
from coordination.core.models import Claim, Message, Room, Session
from tests.conftest import Persona
from tests.hubproc import Hub, live_database, mint_key, start_hub
from tests.test_push import REDIS_URL, _redis_reachable

WITHIN_SEC = 1.0  # a waiting reader hears of a close within this


def _notices(room: str) -> list[Message]:
    return list(Message.objects.filter(channel=room, from_agent=services.SYSTEM_AGENT).order_by("id"))


def _room_events(published: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [data for event, data in published if event == "room"]


# ── The services ──────────────────────────────────────────────────────────


@pytest.mark.django_db
def test_a_closed_room_refuses_posts_until_it_is_reopened(published):
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    services.message_post(from_agent="alice", channel="builds", body="before")

    room, changed = services.room_close(name="builds", actor="root")

    assert changed is True
    assert room.closed_at is not None
    assert room.as_wire()["closed"] is True
    assert room.closed_by == "root"
    with pytest.raises(Conflict, match="channel builds is closed \\(by root\\)"):
        services.message_post(from_agent="alice", channel="builds", body="after")

    room, changed = services.room_reopen(name="builds", actor="root")

    assert changed is True
    assert (room.closed_at, room.closed_by) == (None, None)
    assert services.message_post(from_agent="alice", channel="builds", body="again").channel == "builds"
    assert [(e["action"], e["channel"], e["by"], e["room"]["closed"]) for e in _room_events(published)] == [
        ("closed", "builds", "root", True),
        ("reopened", "builds", "root", False),
    ]


@pytest.mark.django_db
def test_the_room_says_who_closed_and_reopened_it_and_the_close_notice_is_its_last_message():
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    services.message_post(from_agent="alice", channel="builds", body="build 1 green")

    services.room_close(name="builds", actor="root")
    closing = Message.objects.filter(channel="builds").order_by("id").last()
    services.room_reopen(name="builds", actor="operator")

    first, second = _notices("builds")
    assert first == closing
    assert (first.kind, first.to_agent) == ("notice", None)
    assert first.body.startswith("root closed this room")
    assert first.metadata == {"room_action": "closed", "room": "builds", "by": "root"}
    assert second.body.startswith("operator reopened this room")
    assert second.metadata["room_action"] == "reopened"


@pytest.mark.django_db
def test_closing_twice_changes_and_announces_nothing_the_second_time(published):
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    first, changed = services.room_close(name="builds", actor="root")
    again, changed_again = services.room_close(name="builds", actor="someone-else")

    assert (changed, changed_again) == (True, False)
    assert again.closed_by == "root"  # the first close stands
    assert again.closed_at == first.closed_at
    assert len(_notices("builds")) == 1
    assert len(_room_events(published)) == 1

    assert services.room_reopen(name="builds", actor="root")[1] is True
    assert services.room_reopen(name="builds", actor="root")[1] is False
    assert len(_notices("builds")) == 2
    assert len(_room_events(published)) == 2


@pytest.mark.django_db
def test_direct_messages_are_not_room_posts_and_keep_working_in_a_closed_room():
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    services.room_close(name="builds", actor="root")

    dm = services.message_post(from_agent="alice", to_agent="carol", channel="builds", body="still reachable")

    assert (dm.channel, dm.to_agent) == ("builds", "carol")


@pytest.mark.django_db
def test_general_can_be_closed_but_direct_cannot():
    services.rooms_ensure_defaults()
    assert services.room_close(name="general", actor="root")[0].closed_at is not None
    with pytest.raises(Conflict):
        services.message_post(from_agent="alice", body="hello everyone")  # general is the default room

    with pytest.raises(Invalid, match="direct room cannot be closed"):
        services.room_close(name="direct", actor="root")
    assert Room.objects.get(pk="direct").closed_at is None


@pytest.mark.django_db
def test_unknown_rooms_and_missing_actors_are_refused():
    services.rooms_ensure_defaults()
    with pytest.raises(NotFound):
        services.room_close(name="nowhere", actor="root")
    with pytest.raises(NotFound):
        services.room_reopen(name="nowhere", actor="root")
    with pytest.raises(Invalid, match="actor is required"):
        services.room_close(name="general", actor="  ")
    assert not Room.objects.filter(pk="nowhere").exists()


@pytest.mark.django_db
def test_the_hubs_own_notices_still_reach_a_closed_room_but_an_agent_named_system_does_not():
    """Housekeeping must not fail on a closed room: bob's stale claim is recovered with a notice there."""
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    services.session_create(agent_id="bob")
    services.message_post(from_agent="alice", channel="builds", body="build 9", thread_id="t-9")
    services.claim_acquire(owner_agent_id="bob", claim_key="build-9", thread_id="t-9", ttl_sec=300)
    services.room_close(name="builds", actor="root")
    Session.objects.filter(agent_id="bob").update(last_seen=timezone.now() - timedelta(hours=1))

    expired = services.sessions_prune_expired()

    assert [s.agent_id for s in expired] == ["bob"]
    assert Claim.objects.get(claim_key="build-9").released_at is not None
    assert "Recovered stale claim build-9" in _notices("builds")[-1].body
    with pytest.raises(Conflict):  # the exemption is the hub's, not anyone calling itself system
        services.message_post(from_agent=services.SYSTEM_AGENT, channel="builds", kind="notice", body="me too")


@pytest.mark.django_db(transaction=True)
def test_concurrent_closes_have_one_winner_and_one_announcement(published):
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    start = threading.Barrier(6)
    results: list[bool] = []
    errors: list[BaseException] = []

    def close(actor: str) -> None:
        try:
            start.wait()
            results.append(services.room_close(name="builds", actor=actor)[1])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=close, args=(f"admin-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert sorted(results) == [False] * 5 + [True]
    assert len(_notices("builds")) == 1
    assert len(_room_events(published)) == 1
    winner = Room.objects.get(pk="builds").closed_by
    assert _notices("builds")[0].body.startswith(f"{winner} closed this room")


@pytest.mark.django_db(transaction=True)
def test_no_post_lands_in_a_room_after_its_closing_notice():
    """Posters racing a close: every accepted post comes before the notice, every later one is a 409."""
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    accepted: list[int] = []
    refused: list[str] = []
    stop = threading.Event()

    def poster(agent: str) -> None:
        try:
            while not stop.is_set():
                try:
                    accepted.append(services.message_post(from_agent=agent, channel="builds", body="tick").id)
                except Conflict:
                    refused.append(agent)
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=poster, args=(name,)) for name in ("alice", "bob", "carol")]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        services.room_close(name="builds", actor="root")
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    notice = _notices("builds")[0]
    assert accepted, "the posters never got a post in"
    assert sorted(refused) == ["alice", "bob", "carol"]
    assert max(accepted) < notice.id
    assert Message.objects.filter(channel="builds", id__gt=notice.id).count() == 0


def test_the_dispatcher_hands_a_room_event_to_the_rooms_readers_whatever_kinds_they_asked_for():
    dispatcher = events.Dispatcher()
    seen: dict[str, int] = {}
    routes = {
        "ops reader": events.Route(rooms=frozenset({"ops"})),
        "every room": events.Route(agent_id="bob"),
        "every message": events.Route(every_message=True),
        "builds reader": events.Route(rooms=frozenset({"builds"})),
        "bob's dms only": events.Route(rooms=frozenset(), agent_id="bob"),
        "claims only": events.Route(rooms=frozenset(), kinds=frozenset({"claim"})),
        "room kind": events.Route(rooms=frozenset(), kinds=frozenset({"room"})),
    }
    for name, route in routes.items():

        def listener(event: dict[str, Any], name: str = name) -> None:
            seen[name] = seen.get(name, 0) + 1

        for bucket in dispatcher._routes.buckets(listener, route):
            bucket.add(listener)

    dispatcher.deliver({"type": "arc.event", "event": "room", "action": "closed", "channel": "ops"})

    assert seen == {"ops reader": 1, "every room": 1, "every message": 1, "room kind": 1}


# ── REST ──────────────────────────────────────────────────────────────────


@pytest.fixture
def root(db: None) -> Persona:
    """root: an admin key."""
    services.rooms_ensure_defaults()
    return Persona("root", admin=True)


@pytest.fixture
def alice(db: None) -> Persona:
    """alice: an ordinary agent key."""
    return Persona("alice")


@pytest.fixture
def builds(db: None) -> str:
    services.rooms_ensure_defaults()
    services.room_create(name="builds", created_by="alice")
    return "builds"


def test_an_admin_key_closes_and_reopens_a_room(root, builds, api):
    status, env = root.post("/v1/channels/builds/close")

    assert status == 200
    assert env["ok"] is True
    assert env["changed"] is True
    assert env["result"]["name"] == "builds"
    assert (env["result"]["closed"], env["result"]["closed_by"]) == (True, "root")
    assert env["result"]["closed_at"] is not None
    listed = {c["name"]: c for c in api.get("/v1/channels")[1]["result"]}
    assert listed["builds"]["closed"] is True

    status, again = root.post("/v1/channels/builds/close")
    assert (status, again["changed"], again["result"]["closed_at"]) == (200, False, env["result"]["closed_at"])

    status, env = root.post("/v1/channels/builds/reopen")
    assert (status, env["changed"]) == (200, True)
    assert (env["result"]["closed"], env["result"]["closed_at"], env["result"]["closed_by"]) == (False, None, None)


def test_loopback_without_a_key_and_ordinary_keys_may_not_close_or_reopen(builds, api, alice):
    for client in (api, alice):
        for verb in ("close", "reopen"):
            status, env = client.post(f"/v1/channels/builds/{verb}")
            assert status == 403
            assert env["ok"] is False
            assert "admin key" in env["error"]
    assert Room.objects.get(pk="builds").closed_at is None


def test_posting_into_a_closed_room_is_a_409_that_says_why(root, builds, api):
    root.post("/v1/channels/builds/close")

    status, env = api.post("/v1/messages", {"from_agent": "bob", "channel": "builds", "body": "anyone?"})

    assert status == 409
    assert env == {
        "ok": False,
        "error": "channel builds is closed (by root): posts to it are refused until an admin reopens it "
        "(POST /v1/channels/builds/reopen); direct messages still work",
    }


def test_direct_messages_still_work_while_a_room_is_closed(root, builds, api):
    root.post("/v1/channels/builds/close")

    status, env = api.post(
        "/v1/messages", {"from_agent": "bob", "to_agent": "carol", "channel": "builds", "body": "psst"}
    )
    assert status == 201
    assert env["result"]["to_agent"] == "carol"
    status, env = api.post("/v1/messages", {"from_agent": "bob", "to_agent": "carol", "body": "in direct"})
    assert status == 201


def test_reopening_restores_posting(root, builds, api):
    root.post("/v1/channels/builds/close")
    root.post("/v1/channels/builds/reopen")

    status, env = api.post("/v1/messages", {"from_agent": "bob", "channel": "builds", "body": "back"})

    assert status == 201
    assert env["result"]["channel"] == "builds"


def test_unknown_rooms_are_404_and_direct_cannot_be_closed(root):
    assert root.post("/v1/channels/nowhere/close") == (404, {"ok": False, "error": "channel not found"})
    assert root.post("/v1/channels/nowhere/reopen") == (404, {"ok": False, "error": "channel not found"})
    status, env = root.post("/v1/channels/direct/close")
    assert status == 400
    assert "cannot be closed" in env["error"]


def test_bad_requests_get_an_envelope_not_a_500(root, builds):
    assert root.post("/v1/channels/builds/close", raw=b"[1]")[0] == 400
    assert root.post("/v1/channels/builds/close", raw=b"{nope")[0] == 400
    status, env = root.get("/v1/channels/builds/close")
    assert status == 405
    assert env["ok"] is False
    assert Room.objects.get(pk="builds").closed_at is None


def test_a_poll_of_a_closed_room_answers_at_once_with_room_closed(root, builds, api):
    posted = api.post("/v1/messages", {"from_agent": "bob", "channel": "builds", "body": "last words"})[1]["result"]
    root.post("/v1/channels/builds/close")

    started = time.monotonic()
    status, env = api.get("/v1/messages", channel="builds", since_id=posted["id"], timeout=5)
    assert status == 200
    assert env["room_closed"] is True
    assert [m["metadata"].get("room_action") for m in env["result"]] == ["closed"]
    status, env = api.get("/v1/events", agent_id="bob", channel="builds", since_id=0, timeout=5)
    assert env["room_closed"] is True
    assert [m["body"] for m in env["result"]][:1] == ["last words"]
    assert time.monotonic() - started < 2.0

    # An open room's poll has no such key (Arc's envelope, unchanged), nor has a poll of every room.
    assert "room_closed" not in api.get("/v1/messages", channel="general")[1]
    assert "room_closed" not in api.get("/v1/events", agent_id="bob")[1]
    root.post("/v1/channels/builds/reopen")
    assert "room_closed" not in api.get("/v1/messages", channel="builds")[1]


def test_a_poll_of_an_unknown_room_is_still_404(api):
    services.rooms_ensure_defaults()
    assert api.get("/v1/messages", channel="nowhere", timeout=1) == (404, {"ok": False, "error": "channel not found"})
    assert api.get("/v1/events", agent_id="bob", channel="nowhere") == (
        404,
        {"ok": False, "error": "channel not found"},
    )


# ── Django admin ──────────────────────────────────────────────────────────


def test_the_admin_actions_close_and_reopen_through_the_services(builds, published):
    staff = User.objects.create_superuser("olga", "olga@example.com", "pw")
    browser = Client()
    browser.force_login(staff)
    changelist = "/admin/coordination/room/"

    response = browser.post(
        changelist, {"action": "close_rooms", "_selected_action": ["builds", "direct"]}, follow=True
    )

    assert response.status_code == 200
    room = Room.objects.get(pk="builds")
    assert (room.closed_by, room.closed_at is not None) == ("olga", True)
    assert Room.objects.get(pk="direct").closed_at is None
    shown = [str(m) for m in response.context["messages"]]
    assert "Closed 1 room(s): builds." in shown
    assert any("direct room cannot be closed" in m for m in shown)
    assert _notices("builds")[0].body.startswith("olga closed this room")
    assert len(_room_events(published)) == 1

    browser.post(changelist, {"action": "reopen_rooms", "_selected_action": ["builds"]})
    assert Room.objects.get(pk="builds").closed_at is None


# ── Waiting readers, in process (in-memory channel layer) ─────────────────


@pytest.fixture
def fresh_hub(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each async test has its own event loop: its own channel layer and event dispatcher."""
    monkeypatch.setattr(channel_layers, "backends", {})
    monkeypatch.setattr(events, "dispatcher", events.Dispatcher())
    services.rooms_ensure_defaults()
    services.room_create(name="builds")
    services.room_create(name="ops")


close = sync_to_async(services.room_close)
reopen = sync_to_async(services.room_reopen)


@sync_to_async
def post(**fields: Any) -> dict[str, Any]:
    return services.message_post(**fields).as_wire()


async def _poll(path: str, **params: Any) -> tuple[float, dict[str, Any]]:
    response = await AsyncClient().get(path, params)
    assert response.status_code == 200, response.content
    return time.monotonic(), response.json()


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/events"])
async def test_a_waiting_long_poll_is_woken_by_the_close(fresh_hub, path):
    since = (await post(from_agent="alice", channel="builds", body="warm-up"))["id"]
    params = {"channel": "builds", "since_id": since, "timeout": 20, "agent_id": "bob"}
    waiter = asyncio.ensure_future(_poll(path, **params))
    await asyncio.sleep(0.3)
    assert not waiter.done()

    closed_at = time.monotonic()
    await close(name="builds", actor="root")
    answered_at, env = await asyncio.wait_for(waiter, 5)

    assert answered_at - closed_at < WITHIN_SEC
    assert env["room_closed"] is True
    assert [m["metadata"].get("room_action") for m in env["result"]] == ["closed"]


async def test_a_poll_of_a_thread_in_the_room_is_woken_by_the_room_event_alone(fresh_hub):
    """The closing notice is not in the thread, so only the room event can wake this poll."""
    waiter = asyncio.ensure_future(_poll("/v1/messages", channel="builds", thread_id="t-1", timeout=20))
    await asyncio.sleep(0.3)

    closed_at = time.monotonic()
    await close(name="builds", actor="root")
    answered_at, env = await asyncio.wait_for(waiter, 5)

    assert answered_at - closed_at < WITHIN_SEC
    assert env == {"ok": True, "room_closed": True, "result": []}


async def test_a_long_poll_on_another_room_keeps_waiting(fresh_hub):
    waiter = asyncio.ensure_future(_poll("/v1/messages", channel="ops", timeout=20))
    await asyncio.sleep(0.3)
    await close(name="builds", actor="root")
    await asyncio.sleep(0.5)
    assert not waiter.done()
    message = await post(from_agent="alice", channel="ops", body="ops news")
    _, env = await asyncio.wait_for(waiter, 5)
    assert [m["id"] for m in env["result"]] == [message["id"]]
    assert "room_closed" not in env


async def test_a_thread_poll_is_not_cut_short_by_a_room_closing_elsewhere(fresh_hub):
    started = time.monotonic()
    waiter = asyncio.ensure_future(_poll("/v1/messages", thread_id="t-1", timeout=1.5))
    await asyncio.sleep(0.3)
    await close(name="builds", actor="root")
    answered_at, env = await asyncio.wait_for(waiter, 5)
    assert env["result"] == []
    assert answered_at - started >= 1.4


class SSE:
    """An in-process ``/v1/stream``, read continuously as a client would, its chunks queued.

    ``open`` returns once the stream has read its backlog and waits for news, so what
    the test does next reaches it as events, not as state found on connecting.
    """

    SETTLE_SEC = 0.3

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for chunk in self.chunks:
                await self.queue.put(chunk)
        finally:
            await self.queue.put(None)  # the end of the stream

    @classmethod
    async def open(cls, headers: dict[str, str] | None = None, **params: Any) -> SSE:
        response = await AsyncClient().get("/v1/stream", params, headers=headers or {})
        assert response.status_code == 200
        stream = cls(response.streaming_content)  # type: ignore[attr-defined]
        assert await stream.next() == b": connected\n\n"
        await asyncio.sleep(cls.SETTLE_SEC)
        return stream

    async def next(self, timeout: float = 2.0) -> bytes | None:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def events(self, count: int, timeout: float = 2.0) -> list[tuple[str, dict[str, Any]]]:
        """The next ``count`` SSE events as ``(event name, data)``; comments are skipped."""
        out: list[tuple[str, dict[str, Any]]] = []
        while len(out) < count:
            chunk = await self.next(timeout)
            assert chunk is not None, f"the stream ended after {out}"
            for block in chunk.decode().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
                if "data" in fields:
                    out.append((fields.get("event", "message"), json.loads(fields["data"])))
        return out

    async def ended(self, timeout: float = 2.0) -> bool:
        rest = await self.next(timeout)
        assert rest is None, f"the stream went on: {rest!r}"
        return True

    async def close(self) -> None:
        self.pump.cancel()
        await asyncio.wait([self.pump])
        await self.chunks.aclose()


async def test_a_stream_of_the_room_gets_the_notice_then_event_room_and_ends(fresh_hub):
    stream = await SSE.open(agent_id="bob", channel="builds")
    closed_at = time.monotonic()
    await close(name="builds", actor="root")

    (kind, notice), (event, data) = await stream.events(2)

    assert time.monotonic() - closed_at < WITHIN_SEC
    assert (kind, notice["metadata"]["room_action"]) == ("message", "closed")
    assert event == "room"
    assert (data["action"], data["channel"], data["by"]) == ("closed", "builds", "root")
    assert (data["room"]["name"], data["room"]["closed"], data["room"]["closed_by"]) == ("builds", True, "root")
    assert await stream.ended()


async def test_a_stream_of_one_room_by_channels_ends_too(fresh_hub):
    stream = await SSE.open(agent_id="bob", channels="builds", types="claim")
    await close(name="builds", actor="root")
    # Messages were not asked for: just the room event, unasked, then the end.
    assert [name for name, _ in await stream.events(1)] == ["room"]
    assert await stream.ended()


async def test_a_stream_that_opens_on_a_closed_room_sends_its_backlog_and_the_room_and_ends(fresh_hub):
    before = await post(from_agent="alice", channel="builds", body="before")
    await close(name="builds", actor="root")

    stream = await SSE.open(agent_id="bob", channel="builds", since_id=before["id"] - 1)

    received = await stream.events(3)
    assert [name for name, _ in received] == ["message", "message", "room"]
    assert received[0][1]["body"] == "before"
    assert received[2][1]["room"]["closed"] is True
    assert await stream.ended()


async def test_a_stream_of_every_room_is_told_of_closes_and_reopens_and_goes_on(fresh_hub):
    stream = await SSE.open(agent_id="bob")  # default types: messages only; the room event comes unasked
    await close(name="builds", actor="root")
    received = await stream.events(2)
    assert [(name, data.get("action")) for name, data in received] == [("message", None), ("room", "closed")]

    await reopen(name="builds", actor="root")
    received = await stream.events(2)
    assert [(name, data.get("action")) for name, data in received] == [("message", None), ("room", "reopened")]
    assert received[1][1]["room"]["closed"] is False

    after = await post(from_agent="alice", channel="ops", body="still streaming")
    assert [data["id"] for _, data in await stream.events(1)] == [after["id"]]
    await stream.close()


async def test_a_stream_of_other_rooms_hears_nothing_of_the_close(fresh_hub):
    stream = await SSE.open(agent_id="bob", channels="ops", types="message,room")
    await close(name="builds", actor="root")
    wanted = await post(from_agent="alice", channel="ops", body="ops only")
    assert [(name, data.get("id")) for name, data in await stream.events(1)] == [("message", wanted["id"])]
    await stream.close()


async def test_a_scoped_key_hears_only_of_its_own_rooms(fresh_hub):
    _, secret = await sync_to_async(services.key_mint)(agent_id="olivia", rooms=["ops"])
    stream = await SSE.open(headers={"Authorization": f"Bearer {secret}"})

    await close(name="builds", actor="root")
    await close(name="ops", actor="root")

    received = await stream.events(2)
    assert [(name, data.get("channel")) for name, data in received] == [("message", "ops"), ("room", "ops")]
    await stream.close()


class Socket:
    """A WebSocket client of the hub's ASGI app (from loopback)."""

    def __init__(self) -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await application({**scope, "client": ("127.0.0.1", 50123)}, receive, send)

        self.comm = WebsocketCommunicator(app, "/v1/ws")
        self.backlog: deque[dict[str, Any]] = deque()

    async def open(self, agent_id: str) -> Socket:
        connected, code = await self.comm.connect()
        assert connected, code
        await self.call("register", agent_id=agent_id)
        return self

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        await self.comm.send_json_to({"type": kind, "id": kind, **fields})
        while True:
            frame: dict[str, Any] = await self.comm.receive_json_from(2)
            if frame.get("id") == kind:
                return frame
            self.backlog.append(frame)

    async def pushed(self) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.popleft()
        frame: dict[str, Any] = await self.comm.receive_json_from(2)
        return frame

    async def quiet(self) -> bool:
        return not self.backlog and bool(await self.comm.receive_nothing(0.3))

    async def close(self) -> None:
        await self.comm.disconnect()


async def test_a_socket_gets_an_event_frame_when_its_room_closes_and_the_post_is_refused(fresh_hub):
    bob = await Socket().open("bob")
    await close(name="builds", actor="root")

    notice, event = await bob.pushed(), await bob.pushed()

    assert notice["type"] == "message"
    assert notice["message"]["metadata"]["room_action"] == "closed"
    assert event["type"] == "event"
    assert event["event"] == "room"
    assert (event["data"]["action"], event["data"]["channel"], event["data"]["room"]["closed"]) == (
        "closed",
        "builds",
        True,
    )
    refused = await bob.call("post", channel="builds", body="hello?")
    assert (refused["type"], refused["code"]) == ("error", "conflict")
    assert "channel builds is closed" in refused["message"]
    dm = await bob.call("post", to_agent="carol", channel="builds", body="still fine")
    assert dm["type"] == "posted"
    await bob.close()


async def test_a_socket_subscribed_to_other_rooms_gets_no_room_event(fresh_hub):
    bob = await Socket().open("bob")
    subscribed = await bob.call("subscribe", channels=["ops"], types=["claim"])
    assert subscribed["type"] == "subscribed"
    await close(name="builds", actor="root")
    assert await bob.quiet()
    await close(name="ops", actor="root")
    frames = [await bob.pushed(), await bob.pushed()]
    assert [(f["type"], f.get("event")) for f in frames] == [("message", None), ("event", "room")]
    await bob.close()


# ── Live hubs ─────────────────────────────────────────────────────────────


def _admin_key(hub: Hub) -> str:
    """An admin key minted beside the live hub (``manage.py invite --admin``), as an operator would."""
    return mint_key(hub, "root", "--admin")


def _as(key: str, hub: Hub, method: str, path: str, payload: Any = None) -> tuple[int, dict[str, Any]]:
    response = requests.request(
        method, hub.url + path, json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response.status_code, response.json()


def _wait_in_thread(hub: Hub, path: str) -> tuple[threading.Thread, dict[str, Any]]:
    answer: dict[str, Any] = {}

    def wait() -> None:
        status, env = hub.call("GET", path, timeout=30)
        answer.update(status=status, env=env, at=time.monotonic())

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.5)
    return waiter, answer


@pytest.mark.live
def test_the_live_hub_wakes_a_long_poll_and_ends_a_stream_when_an_admin_closes_the_room(live_hub: Hub):
    key = _admin_key(live_hub)
    assert live_hub.call("POST", "/v1/channels", {"name": "builds"})[0] == 201
    since = live_hub.call("POST", "/v1/messages", {"from_agent": "alice", "channel": "builds", "body": "hi"})[1]
    waiter, answer = _wait_in_thread(
        live_hub, f"/v1/messages?channel=builds&since_id={since['result']['id']}&timeout=20"
    )
    stream = requests.get(
        f"{live_hub.url}/v1/stream", params={"agent_id": "bob", "channel": "builds"}, stream=True, timeout=10
    )
    lines = stream.iter_lines(decode_unicode=True)
    assert next(lines) == ": connected"

    root = ArcClient("root", base_url=live_hub.url, key=key)
    closed_at = time.monotonic()
    assert root.close_room("builds")["closed"] is True
    waiter.join(10)

    assert answer["status"] == 200
    assert answer["env"]["room_closed"] is True
    assert answer["at"] - closed_at < WITHIN_SEC
    rest = [line for line in lines if line]  # the hub ends the stream: this returns
    assert rest[-2] == "event: room"
    assert json.loads(rest[-1][len("data: ") :])["room"]["closed"] is True
    assert live_hub.call("POST", "/v1/messages", {"from_agent": "alice", "channel": "builds", "body": "no"})[0] == 409

    # The Python client: a stream of the room ends at once (no reconnect loop), with the event if asked for.
    bob = ArcClient("bob", base_url=live_hub.url)
    assert [item["event"] for item in bob.stream(channels="builds", types="message,room", since_id=10**9)] == ["room"]
    assert list(bob.stream(channels="builds", since_id=10**9)) == []
    with pytest.raises(ClientError) as refused:
        bob.close_room("builds")  # loopback without a key: no admin
    assert refused.value.status == 403
    assert root.reopen_room("builds")["closed"] is False
    assert live_hub.call("POST", "/v1/messages", {"from_agent": "alice", "channel": "builds", "body": "back"})[0] == 201
    bob.close()
    root.close()


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Hub, Hub]]:
    """Two hub processes on one database; on one Redis channel layer when Redis is there."""
    with live_database() as database_url:
        env = {"ARC_REDIS_URL": REDIS_URL} if _redis_reachable() else {}
        first = start_hub(tmp_path / "one", database_url=database_url, extra_env=env)
        if not database_url:
            env["ARC_STORAGE"] = str(first.home / "arc.sqlite3")
        second = start_hub(tmp_path / "two", database_url=database_url, extra_env=env)
        try:
            yield first, second
        finally:
            second.stop()
            first.stop()


@pytest.mark.live
def test_a_close_through_one_worker_holds_on_another(two_workers: tuple[Hub, Hub]):
    first, second = two_workers
    key = _admin_key(first)
    first.call("POST", "/v1/channels", {"name": "builds"})
    # The second worker knows the room (its room cache is warm) before the first closes it.
    assert second.call("POST", "/v1/messages", {"from_agent": "bob", "channel": "builds", "body": "warm"})[0] == 201

    assert _as(key, first, "POST", "/v1/channels/builds/close")[1]["result"]["closed"] is True

    status, env = second.call("POST", "/v1/messages", {"from_agent": "bob", "channel": "builds", "body": "late"})
    assert status == 409
    assert "closed" in env["error"]
    assert second.call("GET", "/v1/messages?channel=builds&timeout=5")[1]["room_closed"] is True
    assert _as(key, second, "POST", "/v1/channels/builds/reopen")[1]["changed"] is True
    assert first.call("POST", "/v1/messages", {"from_agent": "bob", "channel": "builds", "body": "back"})[0] == 201


@pytest.mark.live
def test_a_close_through_one_worker_wakes_a_long_poll_on_another(two_workers: tuple[Hub, Hub]):
    if not _redis_reachable():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: events cannot cross processes")
    first, second = two_workers
    key = _admin_key(first)
    first.call("POST", "/v1/channels", {"name": "builds"})
    waiter, answer = _wait_in_thread(second, "/v1/messages?channel=builds&since_id=0&timeout=20")
    assert answer == {}  # an empty room: still waiting

    closed_at = time.monotonic()
    _as(key, first, "POST", "/v1/channels/builds/close")
    waiter.join(10)

    assert answer["env"]["room_closed"] is True
    assert answer["at"] - closed_at < WITHIN_SEC
    assert [m["metadata"]["room_action"] for m in answer["env"]["result"]] == ["closed"]
