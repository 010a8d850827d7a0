"""The WebSocket protocol at ``/v1/ws`` (docs/websocket.md), through Channels' communicator and a live hub.

Personas: alice coordinates and delegates; bob is a worker with the ``review``
capability; carol is a bystander who must not see what is not hers; mallory
tries to post under someone else's name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections import Counter, deque
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.utils import timezone

from arcsite.asgi import application
from coordination.core import events, services
from coordination.core.models import Delivery, Message, Session, Task
from tests.hubproc import Hub

pytestmark = pytest.mark.django_db(transaction=True)

LOOPBACK = "127.0.0.1"


@pytest.fixture(autouse=True)
def fresh_hub(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own event loop: give it its own channel layer and event dispatcher.

    Transactional tests flush the database, so the default rooms are made again.
    """
    monkeypatch.setattr(channel_layers, "backends", {})
    monkeypatch.setattr(events, "dispatcher", events.Dispatcher())
    services.rooms_ensure_defaults()


def _from(host: str) -> Any:
    """The hub's ASGI app as a client at ``host`` sees it (the communicator sets no client address)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await application({**scope, "client": (host, 50123)}, receive, send)

    return app


class Socket:
    """One client connection speaking the hub's frames.

    ``call`` sends a frame with a fresh correlation id and returns the reply with
    that id; frames pushed meanwhile are kept, in order, for ``pushed``.
    """

    def __init__(self, host: str = LOOPBACK, path: str = "/v1/ws") -> None:
        self.comm = WebsocketCommunicator(_from(host), path)
        self.backlog: deque[dict[str, Any]] = deque()
        self._ids: Counter[str] = Counter()

    async def open(self) -> Socket:
        connected, code = await self.comm.connect()
        assert connected, f"refused with {code}"
        return self

    async def send(self, frame: Any) -> None:
        await self.comm.send_json_to(frame)

    async def send_text(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def receive(self, timeout: float = 2.0) -> dict[str, Any]:
        frame: dict[str, Any] = await self.comm.receive_json_from(timeout)
        return frame

    async def reply(self, frame_id: Any, timeout: float = 2.0) -> dict[str, Any]:
        while True:
            frame = await self.receive(timeout)
            if "id" in frame and frame["id"] == frame_id:
                return frame
            self.backlog.append(frame)

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._ids[kind] += 1
        frame_id = f"{kind}-{self._ids[kind]}"
        await self.send({"type": kind, "id": frame_id, **fields})
        return await self.reply(frame_id)

    async def register(self, agent_id: str, **fields: Any) -> dict[str, Any]:
        frame = await self.call("register", agent_id=agent_id, **fields)
        assert frame["type"] == "registered", frame
        return frame

    async def pushed(self, timeout: float = 2.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.popleft()
        return await self.receive(timeout)

    async def quiet(self, timeout: float = 0.3) -> bool:
        """Nothing more was pushed (waits ``timeout``; unlike a receive timeout, keeps the socket)."""
        return not self.backlog and bool(await self.comm.receive_nothing(timeout))

    async def close(self) -> None:
        await self.comm.disconnect()


async def _connect(agent_id: str | None = None, **fields: Any) -> Socket:
    sock = await Socket().open()
    if agent_id is not None:
        await sock.register(agent_id, **fields)
    return sock


def _post(**fields: Any) -> dict[str, Any]:
    return services.message_post(**fields).as_wire()


post = sync_to_async(_post)


# ── Registering ───────────────────────────────────────────────────────────


async def test_register_opens_a_session_and_binds_the_socket() -> None:
    bob = await Socket().open()
    frame = await bob.call(
        "register", agent_id="bob", display_name="Bob", description="reviews diffs", capabilities=["review"]
    )

    assert frame["type"] == "registered"
    assert frame["id"] == "register-1"
    session = frame["session"]
    assert (session["agent_id"], session["display_name"], session["capabilities"]) == ("bob", "Bob", ["review"])
    assert session["metadata"] == {"description": "reviews diffs"}
    assert isinstance(frame["since_id"], int)
    live = await sync_to_async(lambda: list(Session.objects.filter(agent_id="bob", active=True)))()
    assert [s.session_id for s in live] == [session["session_id"]]
    await bob.close()


async def test_registering_again_replaces_the_session_as_a_reconnecting_client_would() -> None:
    first = await _connect("bob")
    second = await Socket().open()
    frame = await second.register("bob", capabilities=["review", "test"])

    sessions = await sync_to_async(lambda: list(Session.objects.filter(agent_id="bob", active=True)))()
    assert [s.session_id for s in sessions] == [frame["session"]["session_id"]]
    await first.close()
    await second.close()


async def test_a_socket_registered_as_one_agent_cannot_register_as_another() -> None:
    bob = await _connect("bob")
    frame = await bob.call("register", agent_id="carol")

    assert (frame["type"], frame["code"]) == ("error", "conflict")
    assert "deregister" in frame["message"]
    await bob.close()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "post", "body": "hi"},
        {"type": "broadcast", "body": "hi"},
        {"type": "delegate", "to_capability": "review", "body": "look"},
        {"type": "result", "task_id": 1},
        {"type": "subscribe"},
        {"type": "ack", "message_ids": [1]},
        {"type": "nack", "message_id": 1},
        {"type": "deregister"},
    ],
)
async def test_frames_that_act_as_an_agent_need_a_registered_socket(frame: dict[str, Any]) -> None:
    sock = await Socket().open()
    await sock.send({**frame, "id": 7})
    error = await sock.receive()

    assert error == {"type": "error", "id": 7, "code": "not_registered", "message": error["message"]}
    assert (await sock.call("heartbeat"))["type"] == "heartbeat_ack"
    await sock.close()


async def test_deregister_closes_the_session_and_stops_the_feed() -> None:
    bob = await _connect("bob")
    frame = await bob.call("deregister")

    assert frame["type"] == "deregistered"
    assert (frame["agent_id"], frame["session"]["active"]) == ("bob", False)
    await post(from_agent="alice", body="anyone there?")
    assert await bob.quiet()
    assert (await bob.call("post", body="hello"))["code"] == "not_registered"
    await bob.close()


# ── Asking the hub ────────────────────────────────────────────────────────


async def test_discover_lists_live_agents_with_a_capability() -> None:
    alice = await _connect("alice", capabilities=["plan"])
    bob = await _connect("bob", capabilities=["review"])

    everyone = await alice.call("discover")
    reviewers = await alice.call("discover", capability="review")

    assert everyone["type"] == "agents"
    assert [a["agent_id"] for a in everyone["agents"]] == ["alice", "bob"]
    assert [a["agent_id"] for a in reviewers["agents"]] == ["bob"]
    await alice.close()
    await bob.close()


async def test_status_without_a_task_is_the_hub_summary() -> None:
    alice = await _connect("alice")
    await post(from_agent="alice", body="one")

    frame = await alice.call("status")

    assert frame["type"] == "status"
    assert frame["hub"]["messages"] == 1
    assert frame["hub"]["agents"] == {"live": 1, "idle": 0}
    assert (await alice.call("status", task_id=999))["code"] == "not_found"
    await alice.close()


async def test_heartbeat_is_acknowledged_and_refreshes_presence() -> None:
    bob = await _connect("bob")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    await sync_to_async(lambda: Session.objects.filter(agent_id="bob").update(last_seen=an_hour_ago))()

    frame = await bob.call("heartbeat")

    assert frame["type"] == "heartbeat_ack"
    last_seen = await sync_to_async(lambda: Session.objects.get(agent_id="bob", active=True).last_seen)()
    assert last_seen > timezone.now() - timedelta(seconds=5)
    await bob.close()


# ── Messages, pushed ──────────────────────────────────────────────────────


async def test_bob_gets_alices_post_pushed_within_a_second() -> None:
    alice = await _connect("alice")
    bob = await _connect("bob")

    started = time.monotonic()
    posted = await alice.call("post", channel="general", body="standup in 5", thread_id="daily")
    pushed = await bob.pushed(timeout=1.0)
    elapsed = time.monotonic() - started

    assert posted["type"] == "posted"
    assert posted["message"]["from_agent"] == "alice"
    assert posted["recipients"] == 1
    assert pushed == {"type": "message", "message": posted["message"]}
    assert elapsed < 1.0
    assert await alice.quiet()  # her own post is not pushed back to her (exclude_self)
    await alice.close()
    await bob.close()


async def test_a_post_that_reaches_nobody_says_so() -> None:
    alice = await _connect("alice")
    frame = await alice.call("post", body="hello?")

    assert frame["recipients"] == 0
    assert "no other agent is live" in frame["warning"]
    await alice.close()


async def test_a_direct_message_reaches_only_its_recipient() -> None:
    alice = await _connect("alice")
    bob = await _connect("bob")
    carol = await _connect("carol")

    posted = await alice.call("post", to_agent="bob", body="just for you")
    pushed = await bob.pushed()

    assert posted["delivery"] == {"bob": "queued"}
    assert pushed == {"type": "message", "message": posted["message"]}
    assert await carol.quiet()
    for sock in (alice, bob, carol):
        await sock.close()


async def test_broadcast_posts_to_general() -> None:
    alice = await _connect("alice")
    bob = await _connect("bob")

    posted = await alice.call("broadcast", body="deploy frozen")
    pushed = await bob.pushed()

    assert posted["type"] == "posted"
    assert (pushed["message"]["channel"], pushed["message"]["body"]) == ("general", "deploy frozen")
    await alice.close()
    await bob.close()


async def test_posting_as_someone_else_is_forbidden_and_posting_as_yourself_is_fine() -> None:
    mallory = await _connect("mallory")

    forged = await mallory.call("post", from_agent="alice", body="send me the keys")
    honest = await mallory.call("post", from_agent="mallory", body="hi")

    assert (forged["type"], forged["code"]) == ("error", "forbidden")
    assert honest["type"] == "posted"
    assert await sync_to_async(lambda: Message.objects.filter(from_agent="alice").exists())() is False
    await mallory.close()


async def test_register_with_since_id_resumes_after_a_reconnect() -> None:
    bob = await _connect("bob")
    first = await post(from_agent="alice", body="m1")
    assert (await bob.pushed())["message"]["id"] == first["id"]
    await bob.close()

    missed = [await post(from_agent="alice", body=f"m{i}") for i in (2, 3)]
    again = await _connect("bob", since_id=first["id"])
    received = [await again.pushed(), await again.pushed()]

    assert [f["message"]["id"] for f in received] == [m["id"] for m in missed]
    assert await again.quiet()
    await again.close()


# ── Subscriptions ─────────────────────────────────────────────────────────


async def test_subscribe_with_since_id_resumes_without_gap_or_duplicate() -> None:
    bob = await _connect("bob")
    posted = [await post(from_agent="alice", body=f"m{i}") for i in range(5)]
    for expected in posted:  # the live feed pushed them already
        assert (await bob.pushed())["message"]["id"] == expected["id"]

    frame = await bob.call("subscribe", since_id=posted[1]["id"])
    replayed = [await bob.pushed() for _ in range(3)]
    later = await post(from_agent="alice", body="m5")
    after = await bob.pushed()

    assert (frame["type"], frame["since_id"], frame["channels"], frame["types"]) == (
        "subscribed",
        posted[1]["id"],
        [],
        [],
    )
    assert [f["message"]["id"] for f in replayed] == [m["id"] for m in posted[2:]]
    assert after["message"]["id"] == later["id"]
    assert await bob.quiet()
    await bob.close()


async def test_subscribe_without_since_id_goes_on_from_where_the_feed_was() -> None:
    bob = await _connect("bob")
    seen = await post(from_agent="alice", body="seen")
    assert (await bob.pushed())["message"]["id"] == seen["id"]

    frame = await bob.call("subscribe", types=["task"])
    new = await post(from_agent="alice", body="new")

    assert frame["since_id"] == seen["id"]
    assert (await bob.pushed())["message"]["id"] == new["id"]
    assert await bob.quiet()
    await bob.close()


async def test_subscribe_to_rooms_narrows_broadcasts_but_keeps_direct_messages() -> None:
    await sync_to_async(services.room_create)(name="builds")
    bob = await _connect("bob")
    await bob.call("subscribe", channels=["builds"])

    await post(from_agent="alice", body="general chatter")
    build = await post(from_agent="alice", channel="builds", body="build green")
    direct = await post(from_agent="alice", to_agent="bob", body="ping me")

    assert (await bob.pushed())["message"]["id"] == build["id"]
    assert (await bob.pushed())["message"]["id"] == direct["id"]
    assert await bob.quiet()
    await bob.close()


async def test_subscribing_to_claims_pushes_an_event_when_a_claim_is_acquired() -> None:
    bob = await _connect("bob")
    frame = await bob.call("subscribe", types=["claim"])
    assert frame["types"] == ["claim"]

    await sync_to_async(services.claim_acquire)(owner_agent_id="carol", claim_key="build-7", ttl_sec=60)
    event = await bob.pushed()

    assert event["type"] == "event"
    assert event["event"] == "claim"
    assert event["data"]["action"] == "acquired"
    assert (event["data"]["claim"]["claim_key"], event["data"]["claim"]["owner_agent_id"]) == ("build-7", "carol")
    await bob.close()


async def test_without_a_subscription_to_them_no_events_are_pushed() -> None:
    bob = await _connect("bob")
    await sync_to_async(services.claim_acquire)(owner_agent_id="carol", claim_key="build-8", ttl_sec=60)
    assert await bob.quiet()
    await bob.close()


# ── Delegation ────────────────────────────────────────────────────────────


async def test_a_task_delegated_by_capability_reaches_bob_and_his_result_reaches_alice() -> None:
    alice = await _connect("alice", capabilities=["plan"])
    bob = await _connect("bob", capabilities=["review"])

    delegated = await alice.call(
        "delegate", to_capability="review", body="review PR 12", payload={"pr": 12}, ttl_sec=600
    )
    task_id = delegated["task"]["task_id"]
    task_frame = await bob.pushed()

    assert delegated["type"] == "delegated"
    assert (delegated["task"]["assignee"], delegated["task"]["status"]) == ("bob", "open")
    assert delegated["delivery"] == {"bob": "queued"}
    assert task_frame["type"] == "task"
    assert (task_frame["task_id"], task_frame["from_agent"], task_frame["payload"]) == (task_id, "alice", {"pr": 12})
    assert task_frame["message"]["kind"] == "task_request"
    assert await bob.quiet()  # a task frame instead of, not besides, a message frame

    answered = await bob.call("result", task_id=task_id, success=True, body="LGTM", payload={"approved": True})
    result_frame = await alice.pushed()
    status = await alice.call("status", task_id=task_id)

    assert answered["type"] == "posted"
    assert answered["task"]["status"] == "done"
    assert result_frame["type"] == "result"
    assert (result_frame["task_id"], result_frame["success"], result_frame["from_agent"]) == (task_id, True, "bob")
    assert (result_frame["body"], result_frame["payload"]) == ("LGTM", {"approved": True})
    assert status["task"]["status"] == "done"
    await alice.close()
    await bob.close()


async def test_a_failed_result_fails_the_task() -> None:
    alice = await _connect("alice")
    bob = await _connect("bob")
    delegated = await alice.call("delegate", to_agent="bob", body="run the migration")
    task_id = delegated["task"]["task_id"]
    assert (await bob.pushed())["type"] == "task"

    answered = await bob.call("result", task_id=task_id, success=False, body="disk full")
    result_frame = await alice.pushed()

    assert answered["task"]["status"] == "failed"
    assert (result_frame["type"], result_frame["success"], result_frame["body"]) == ("result", False, "disk full")
    task = await sync_to_async(Task.objects.get)(pk=task_id)
    assert task.failure_reason == "disk full"
    await alice.close()
    await bob.close()


async def test_delegating_to_a_capability_nobody_live_has_is_a_conflict() -> None:
    alice = await _connect("alice")
    frame = await alice.call("delegate", to_capability="astrology", body="read the stars")

    assert (frame["type"], frame["code"]) == ("error", "conflict")
    await alice.close()


# ── Deliveries ────────────────────────────────────────────────────────────


async def _delivery(message_id: int) -> Delivery:
    return await sync_to_async(Delivery.objects.get)(message_id=message_id, agent_id="bob")


async def test_a_pushed_direct_message_is_delivered_and_ack_moves_it_to_acked() -> None:
    bob = await _connect("bob")
    direct = await post(from_agent="alice", to_agent="bob", body="please ack")
    assert (await bob.pushed())["message"]["id"] == direct["id"]
    for _ in range(50):  # recorded by the feed right after the push
        if (await _delivery(direct["id"])).state == "delivered":
            break
        await asyncio.sleep(0.05)
    assert (await _delivery(direct["id"])).state == "delivered"

    frame = await bob.call("ack", message_ids=[direct["id"]])

    assert frame == {"type": "acked", "id": "ack-1", "acked": 1, "message_ids": [direct["id"]]}
    assert (await _delivery(direct["id"])).state == "acked"
    await bob.close()


async def test_nack_queues_the_message_again() -> None:
    bob = await _connect("bob")
    direct = await post(from_agent="alice", to_agent="bob", body="try later")
    await bob.pushed()

    frame = await bob.call("nack", message_id=direct["id"], reason="busy", delay_sec=30)

    assert frame["type"] == "nacked"
    assert (frame["delivery"]["state"], frame["delivery"]["attempts"], frame["delivery"]["last_error"]) == (
        "queued",
        1,
        "busy",
    )
    assert (await bob.call("nack", message_id=123456))["code"] == "not_found"
    await bob.close()


async def test_lease_takes_the_next_direct_messages_by_priority() -> None:
    bob = await _connect("bob")
    routine = await post(from_agent="alice", to_agent="bob", body="routine")
    urgent = await post(from_agent="alice", to_agent="bob", body="urgent", priority="high")

    frame = await bob.call("lease", max=5, lease_sec=30)

    assert frame["type"] == "leased"
    assert [m["id"] for m in frame["messages"]] == [urgent["id"], routine["id"]]
    assert {m["delivery"]["state"] for m in frame["messages"]} == {"leased"}
    assert (await bob.call("lease"))["messages"] == []  # nothing leased twice
    assert (await bob.call("lease", max=0))["code"] == "invalid"
    await bob.close()


# ── Bad frames: an error frame each, and the socket stays open ────────────


@pytest.mark.parametrize(
    ("raw", "code", "frame_id"),
    [
        pytest.param('{"type": "post", "body": ', "invalid", None, id="malformed-json"),
        pytest.param("[1, 2]", "invalid", None, id="json-array"),
        pytest.param('"heartbeat"', "invalid", None, id="json-string"),
        pytest.param('{"id": 3}', "invalid", 3, id="no-type"),
        pytest.param('{"type": 5, "id": 3}', "invalid", 3, id="type-not-a-string"),
        pytest.param('{"type": "dance", "id": "d"}', "unknown_type", "d", id="unknown-type"),
        pytest.param('{"type": "heartbeat", "id": true}', "invalid", None, id="id-not-a-string-or-integer"),
        pytest.param('{"type": "register", "id": 4}', "invalid", 4, id="register-without-agent-id"),
        pytest.param(
            '{"type": "register", "id": 4, "agent_id": "bob", "capabilities": "review"}',
            "invalid",
            4,
            id="capabilities-not-a-list",
        ),
        pytest.param('{"type": "post", "id": 5, "body": ["x"]}', "invalid", 5, id="body-not-a-string"),
        pytest.param('{"type": "post", "id": 5}', "invalid", 5, id="post-without-body"),
        pytest.param('{"type": "post", "id": 5, "channel": "nowhere", "body": "x"}', "invalid", 5, id="unknown-room"),
        pytest.param('{"type": "post", "id": 5, "from_agent": "alice", "body": "x"}', "forbidden", 5, id="as-alice"),
        pytest.param('{"type": "result", "id": 6, "task_id": "abc"}', "invalid", 6, id="task-id-not-an-integer"),
        pytest.param('{"type": "result", "id": 6, "task_id": 999}', "not_found", 6, id="unknown-task"),
        pytest.param('{"type": "delegate", "id": 7, "body": "x"}', "invalid", 7, id="delegate-to-nobody"),
        pytest.param('{"type": "subscribe", "id": 8, "types": ["weather"]}', "invalid", 8, id="unknown-event-type"),
        pytest.param('{"type": "subscribe", "id": 8, "since_id": -1}', "invalid", 8, id="negative-since-id"),
        pytest.param('{"type": "ack", "id": 9, "message_ids": []}', "invalid", 9, id="ack-nothing"),
        pytest.param('{"type": "nack", "id": 9, "message_id": 1, "delay_sec": -5}', "invalid", 9, id="nack-delay"),
    ],
)
async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(raw: str, code: str, frame_id: Any) -> None:
    bob = await _connect("bob")
    await bob.send_text(raw)
    error = await bob.receive()

    assert error["type"] == "error"
    assert (error["code"], error["id"]) == (code, frame_id)
    assert error["message"]
    assert (await bob.call("heartbeat"))["type"] == "heartbeat_ack"
    await bob.close()


async def test_a_binary_frame_gets_an_error_frame() -> None:
    bob = await _connect("bob")
    await bob.comm.send_to(bytes_data=b'{"type": "heartbeat"}')

    error = await bob.receive()

    assert (error["type"], error["code"]) == ("error", "invalid")
    assert "text" in error["message"]
    assert (await bob.call("heartbeat"))["type"] == "heartbeat_ack"
    await bob.close()


async def test_a_frame_over_the_size_cap_is_too_large() -> None:
    bob = await _connect("bob")
    with override_settings(ARC_MAX_REQUEST_BYTES=1000):
        await bob.send({"type": "post", "id": 1, "body": "x" * 2000})
        error = await bob.receive()

    assert (error["type"], error["code"], error["id"]) == ("error", "too_large", None)
    assert (await bob.call("heartbeat"))["type"] == "heartbeat_ack"
    await bob.close()


# ── Connections ───────────────────────────────────────────────────────────


async def test_a_remote_client_is_refused_unless_remote_access_is_on() -> None:
    refused = WebsocketCommunicator(_from("203.0.113.9"), "/v1/ws")
    assert await refused.connect() == (False, 4403)

    await sync_to_async(services.network_set)(allow_remote=True)
    allowed = WebsocketCommunicator(_from("203.0.113.9"), "/v1/ws")
    connected, _ = await allowed.connect()

    assert connected
    await allowed.disconnect()


async def test_other_websocket_paths_are_refused() -> None:
    comm = WebsocketCommunicator(_from(LOOPBACK), "/v1/sockets")
    assert await comm.connect() == (False, 4404)


async def test_an_idle_socket_is_pinged_then_closed_and_its_session_left_to_expire() -> None:
    with override_settings(ARC_WS_PING_SEC=0.3, ARC_WS_IDLE_SEC=0.9):
        bob = await _connect("bob")
        started = time.monotonic()
        ping = await bob.receive(timeout=2)
        pinged_after = time.monotonic() - started
        output = await bob.comm.receive_output(timeout=2)
        while output["type"] == "websocket.send":  # pinged again every ARC_WS_PING_SEC
            assert json.loads(output["text"])["type"] == "ping"
            output = await bob.comm.receive_output(timeout=2)
        closed_after = time.monotonic() - started

    assert ping["type"] == "ping"
    assert 0.2 <= pinged_after < 0.6
    assert output == {"type": "websocket.close", "code": 4408}
    assert 0.8 <= closed_after < 1.5
    # Not deregistered: the session stays until the presence TTL runs out.
    assert await sync_to_async(Session.objects.filter(agent_id="bob", active=True).exists)()
    await bob.comm.disconnect()


async def test_heartbeats_keep_a_socket_open() -> None:
    with override_settings(ARC_WS_PING_SEC=0.3, ARC_WS_IDLE_SEC=0.6):
        bob = await _connect("bob")
        for _ in range(6):
            await asyncio.sleep(0.2)
            assert (await bob.call("heartbeat"))["type"] == "heartbeat_ack"
        frames = list(bob.backlog)

    assert all(f["type"] == "ping" for f in frames)
    await bob.close()


# ── A live hub ────────────────────────────────────────────────────────────


def _frame(text: str) -> bytes:
    """One masked text frame, as a client must send it (RFC 6455)."""
    payload = text.encode()
    mask = os.urandom(4)
    head = struct.pack("!BB", 0x81, 0x80 | len(payload)) if len(payload) < 126 else b""
    assert head, "test frames are short"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_frame(sock: socket.socket) -> str:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    assert first & 0x0F == 0x1, f"expected a text frame, got opcode {first & 0x0F}"
    return exactly(length).decode()


@pytest.mark.live
def test_the_live_hub_serves_the_websocket_protocol(live_hub: Hub) -> None:
    host, port = live_hub.url.removeprefix("http://").rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        status_line = response.split(b"\r\n", 1)[0].decode()
        assert status_line.startswith("HTTP/1.1 101"), status_line

        sock.sendall(_frame(json.dumps({"type": "register", "id": 1, "agent_id": "bob"})))
        registered = json.loads(_read_frame(sock))
        sock.sendall(_frame(json.dumps({"type": "heartbeat", "id": 2})))
        ack = json.loads(_read_frame(sock))

    assert (registered["type"], registered["id"], registered["session"]["agent_id"]) == ("registered", 1, "bob")
    assert (ack["type"], ack["id"]) == ("heartbeat_ack", 2)
