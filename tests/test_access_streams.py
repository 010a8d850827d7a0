"""Agent keys on the connections that stay open: the SSE stream (``/v1/stream``) and the WebSocket (``/v1/ws``).

Revoking or expiring a key takes effect at once (docs/access.md): its open streams and
sockets end within a second. SSE is tested against a live hub (``manage.py up``), with
keys minted and revoked by ``manage.py invite`` / ``revoke`` from another process, as an
operator would; and in process, where ``services.key_revoke`` publishes the revocation.
The WebSocket is tested through Channels' communicator against the real ASGI app.

Personas (each with its own agent key):
- ``alice``: an agent with an unscoped key: acts only as alice, in every room;
- ``olivia``: an outsider whose key is scoped to room ``ops``: reads and posts only there,
  plus her own direct messages;
- ``mallory``: holds alice's key id but not its secret (a wrong key).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient
from django.utils import timezone

from arcsite.asgi import application
from coordination.core import events, services
from coordination.core.models import AgentKey, Message, Task
from tests.hubproc import Hub, manage, mint_key

LOOPBACK = "127.0.0.1"
WITHIN_SEC = 1.0  # docs/access.md: revoked or expired keys' connections close within a second


# ── SSE against a live hub, keys managed from the command line ────────────


def invite(hub: Hub, agent: str, *options: str) -> str:
    return mint_key(hub, agent, *options)


def key_id(secret: str) -> str:
    return secret.split("_")[1]


def call(hub: Hub, method: str, path: str, key: str, payload: Any = None) -> tuple[int, dict[str, Any]]:
    response = requests.request(
        method, hub.url + path, json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response.status_code, response.json()


class Stream:
    """An open ``/v1/stream``: its lines in order, each with the time it arrived."""

    def __init__(self, hub: Hub, key: str, **params: str) -> None:
        self.response = requests.get(
            f"{hub.url}/v1/stream",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
            stream=True,
            timeout=10,
        )
        self.lines: Iterator[str] = (
            line if isinstance(line, str) else line.decode() for line in self.response.iter_lines(decode_unicode=True)
        )

    def until(self, wanted: str) -> tuple[float, list[str]]:
        """Read up to the line ``wanted``; returns when it arrived and the lines before it."""
        seen: list[str] = []
        for line in self.lines:
            if line == wanted:
                return time.monotonic(), seen
            seen.append(line)
        raise AssertionError(f"the stream ended without {wanted!r}: {seen}")

    def ended(self) -> bool:
        """Does the stream end (the hub closes it) with no more events?"""
        rest = [line for line in self.lines if line]
        assert rest == [], rest
        return True

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.close()


def open_stream(streams: list[Stream], hub: Hub, key: str, **params: str) -> Stream:
    stream = Stream(hub, key, **params)
    streams.append(stream)
    assert stream.response.status_code == 200, stream.response.text
    stream.until(": connected")
    return stream


@pytest.mark.live
def test_a_stream_closes_within_a_second_of_manage_py_revoke(live_hub, streams):
    alice = invite(live_hub, "alice")
    stream = open_stream(streams, live_hub, alice)

    manage(live_hub, "revoke", key_id(alice))
    revoked_at = time.monotonic()
    arrived, _ = stream.until("event: key")

    assert arrived - revoked_at < WITHIN_SEC
    assert next(stream.lines) == 'data: {"action": "revoked"}'
    assert stream.ended()
    assert call(live_hub, "GET", "/v1/hub-info", alice) == (401, {"ok": False, "error": "this agent key was revoked"})


@pytest.mark.live
def test_revoking_one_key_leaves_other_streams_open(live_hub, streams):
    alice, bob = invite(live_hub, "alice"), invite(live_hub, "bob")
    alices = open_stream(streams, live_hub, alice)
    bobs = open_stream(streams, live_hub, bob)

    manage(live_hub, "revoke", key_id(alice))
    alices.until("event: key")
    posted = call(live_hub, "POST", "/v1/messages", bob, {"to_agent": "bob", "body": "note to self"})[1]["result"]

    assert bobs.until(f"id: {posted['id']}")
    assert json.loads(next(bobs.lines).removeprefix("data: "))["body"] == "note to self"


@pytest.mark.live
def test_a_stream_ends_when_its_key_expires(live_hub, streams):
    alice = invite(live_hub, "alice", "--expires", "10m")
    # Expiry choices are coarse (10m at the least): move this key's expiry to three seconds from now.
    expires = manage(
        live_hub,
        "shell",
        "-c",
        "from datetime import timedelta; from django.utils import timezone; "
        "from coordination.core.models import AgentKey; at = timezone.now() + timedelta(seconds=3); "
        f"AgentKey.objects.filter(prefix='{key_id(alice)}').update(expires_at=at); print(at.timestamp())",
    )
    expires = expires.splitlines()[-1]  # the shell may say more before it
    stream = open_stream(streams, live_hub, alice)

    stream.until("event: key")
    ended_at = time.time()

    assert float(expires) - 0.1 <= ended_at < float(expires) + WITHIN_SEC
    assert next(stream.lines) == 'data: {"action": "expired"}'
    assert stream.ended()
    assert call(live_hub, "GET", "/v1/hub-info", alice) == (401, {"ok": False, "error": "this agent key has expired"})


@pytest.mark.live
def test_a_keyed_stream_reads_as_its_agent_and_only_its_rooms(live_hub, streams):
    live_hub.call("POST", "/v1/channels", {"name": "ops"})
    olivia = invite(live_hub, "olivia", "--rooms", "ops")
    alice = invite(live_hub, "alice")

    assert requests.get(
        f"{live_hub.url}/v1/stream",
        params={"agent_id": "alice"},
        headers={"Authorization": f"Bearer {olivia}"},
        timeout=10,
    ).json() == {"ok": False, "error": "agent_id must be olivia (the key's agent) or absent, not alice"}
    stream = open_stream(streams, live_hub, olivia)  # no agent_id: the key's agent
    for fields in (
        {"body": "general only"},
        {"to_agent": "bob", "body": "for bob only"},
        {"channel": "ops", "body": "ops news"},
        {"to_agent": "olivia", "body": "for olivia"},
    ):
        assert call(live_hub, "POST", "/v1/messages", alice, fields)[0] == 201

    received = [json.loads(line.removeprefix("data: ")) for line in _data_lines(stream, 2)]

    assert [m["body"] for m in received] == ["ops news", "for olivia"]


def _data_lines(stream: Stream, count: int) -> list[str]:
    out: list[str] = []
    for line in stream.lines:
        if line.startswith("data: "):
            out.append(line)
            if len(out) == count:
                break
    return out


# ── SSE in process: services.key_revoke ───────────────────────────────────


@pytest.fixture
def fresh_hub(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each async test has its own event loop: give it its own channel layer and event dispatcher.

    Transactional tests flush the database, so the default rooms are made again.
    """
    monkeypatch.setattr(channel_layers, "backends", {})
    monkeypatch.setattr(events, "dispatcher", events.Dispatcher())
    services.rooms_ensure_defaults()


@pytest.fixture
def alice(fresh_hub: None) -> tuple[AgentKey, str]:
    """alice: an unscoped key; acts only as alice, in every room."""
    return services.key_mint(agent_id="alice")


@pytest.fixture
def olivia(fresh_hub: None) -> tuple[AgentKey, str]:
    """olivia: a key scoped to room ops; reads and posts only there and in her own direct messages."""
    services.room_create(name="ops")
    return services.key_mint(agent_id="olivia", rooms=["ops"])


async def test_a_stream_in_process_ends_at_once_when_services_revoke_its_key(alice):
    key, secret = alice
    response = await AsyncClient().get("/v1/stream", headers={"Authorization": f"Bearer {secret}"})
    chunks = response.streaming_content.__aiter__()  # type: ignore[attr-defined]
    assert await asyncio.wait_for(chunks.__anext__(), 2) == b": connected\n\n"

    await sync_to_async(services.key_revoke)(key_id=key.prefix)
    revoked_at = time.monotonic()

    assert await asyncio.wait_for(chunks.__anext__(), WITHIN_SEC) == b'event: key\ndata: {"action": "revoked"}\n\n'
    assert time.monotonic() - revoked_at < WITHIN_SEC
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(chunks.__anext__(), WITHIN_SEC)


# ── WebSocket ─────────────────────────────────────────────────────────────


def _from(host: str) -> Any:
    """The hub's ASGI app as a client at ``host`` sees it (the communicator sets no client address)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await application({**scope, "client": (host, 50123)}, receive, send)

    return app


class Socket:
    """One client connection: ``call`` sends a frame and returns its reply; pushed frames wait in ``backlog``."""

    def __init__(self, key: str | None = None, host: str = LOOPBACK) -> None:
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        self.comm = WebsocketCommunicator(_from(host), "/v1/ws", headers=headers)
        self.backlog: deque[dict[str, Any]] = deque()
        self._ids: Counter[str] = Counter()

    async def open(self) -> Socket:
        connected, code = await self.comm.connect()
        assert connected, f"refused with {code}"
        return self

    async def receive(self, timeout: float = 2.0) -> dict[str, Any]:
        frame: dict[str, Any] = await self.comm.receive_json_from(timeout)
        return frame

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._ids[kind] += 1
        frame_id = f"{kind}-{self._ids[kind]}"
        await self.comm.send_json_to({"type": kind, "id": frame_id, **fields})
        while True:
            frame = await self.receive()
            if frame.get("id") == frame_id:
                return frame
            self.backlog.append(frame)

    async def pushed(self, timeout: float = 2.0) -> dict[str, Any]:
        return self.backlog.popleft() if self.backlog else await self.receive(timeout)

    async def quiet(self, timeout: float = 0.3) -> bool:
        return not self.backlog and bool(await self.comm.receive_nothing(timeout))

    async def closed_with(self, timeout: float = 2.0) -> tuple[int, list[dict[str, Any]], float]:
        """Wait for the hub to close the socket: its close code, the frames before it, and when."""
        frames: list[dict[str, Any]] = []
        while True:
            output = await self.comm.receive_output(timeout)
            if output["type"] == "websocket.close":
                return output["code"], frames, time.monotonic()
            frames.append(json.loads(output["text"]))

    async def close(self) -> None:
        await self.comm.disconnect()


post = sync_to_async(lambda **fields: services.message_post(**fields).as_wire())


async def test_a_key_on_the_upgrade_binds_the_socket_to_its_agent(alice):
    sock = await Socket(alice[1]).open()

    registered = await sock.call("register", display_name="Alice")  # no agent_id: the key's agent
    forged = await sock.call("post", from_agent="bob", body="I am bob")
    honest = await sock.call("post", body="I am alice")

    assert registered["session"]["agent_id"] == "alice"
    assert (forged["type"], forged["code"]) == ("error", "forbidden")
    assert honest["message"]["from_agent"] == "alice"
    assert not await sync_to_async(Message.objects.filter(from_agent="bob").exists)()
    await sock.close()


async def test_it_refuses_to_register_a_keyed_socket_as_another_agent(alice):
    sock = await Socket(alice[1]).open()

    refused = await sock.call("register", agent_id="bob")

    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert refused["message"] == "agent_id must be alice (the key's agent) or absent, not bob"
    assert (await sock.call("register", agent_id="alice"))["type"] == "registered"
    await sock.close()


async def test_a_key_in_the_register_frame_binds_the_socket(alice):
    sock = await Socket().open()

    registered = await sock.call("register", key=alice[1])
    forged = await sock.call("post", from_agent="bob", body="I am bob")

    assert registered["session"]["agent_id"] == "alice"
    assert (forged["type"], forged["code"]) == ("error", "forbidden")
    await sock.close()


async def refused_upgrade(secret: str) -> tuple[dict[str, Any], int]:
    """Open a socket with ``secret`` on the upgrade: the error frame it is told, and the close code."""
    comm = WebsocketCommunicator(_from(LOOPBACK), "/v1/ws", headers=[(b"authorization", f"Bearer {secret}".encode())])
    # Accepted, told why, then closed with 4401: every door says "unauthorized" (not a 403 handshake).
    assert await comm.connect() == (True, None)
    told = await comm.receive_json_from(timeout=10)
    closed = await comm.receive_output(timeout=10)
    assert closed["type"] == "websocket.close"
    return told, closed["code"]


async def test_a_wrong_key_on_the_upgrade_is_refused(alice):
    key, _ = alice
    for wrong in (f"arc_{key.prefix}_not-the-secret", "arc_000000000000_guess", "nonsense"):
        told, code = await refused_upgrade(wrong)
        assert (told["type"], told["code"], code) == ("error", "unauthorized", 4401), wrong


async def test_a_wrong_key_in_the_register_frame_gets_an_error_and_no_session(alice):
    key, _ = alice
    sock = await Socket().open()

    refused = await sock.call("register", agent_id="alice", key=f"arc_{key.prefix}_not-the-secret")

    assert (refused["type"], refused["code"], refused["message"]) == ("error", "unauthorized", "unknown agent key")
    assert (await sock.call("heartbeat"))["type"] == "heartbeat_ack"
    assert (await sock.call("post", body="x"))["code"] == "not_registered"
    await sock.close()


async def test_a_revoked_key_cannot_open_a_socket(alice):
    key, secret = alice
    await sync_to_async(services.key_revoke)(key_id=key.prefix)

    told, code = await refused_upgrade(secret)

    assert (told["code"], told["message"], code) == ("unauthorized", "this agent key was revoked", 4401)


async def test_required_mode_needs_a_key_before_anything_else(alice, settings):
    settings.ARC_AUTH = "required"
    sock = await Socket().open()

    early = await sock.call("discover")
    without = await sock.call("register", agent_id="alice")
    registered = await sock.call("register", key=alice[1])

    assert (early["type"], early["code"]) == ("error", "unauthorized")
    assert (without["type"], without["code"]) == ("error", "unauthorized")
    assert registered["session"]["agent_id"] == "alice"
    await sock.close()


async def test_a_remote_socket_needs_remote_access_on_and_a_key(alice):
    assert await WebsocketCommunicator(_from("192.0.2.7"), "/v1/ws").connect() == (False, 4403)

    await sync_to_async(services.network_set)(allow_remote=True)
    sock = await Socket(host="192.0.2.7").open()
    anonymous = await sock.call("register", agent_id="alice")
    keyed = await sock.call("register", key=alice[1])

    assert (anonymous["type"], anonymous["code"]) == ("error", "unauthorized")
    assert keyed["session"]["agent_id"] == "alice"
    await sock.close()


async def test_revoking_the_key_closes_a_registered_socket_with_4401_within_a_second(alice):
    key, secret = alice
    sock = await Socket(secret).open()
    await sock.call("register")

    await sync_to_async(services.key_revoke)(key_id=key.prefix)
    revoked_at = time.monotonic()
    code, frames, closed_at = await sock.closed_with()

    assert code == 4401
    assert closed_at - revoked_at < WITHIN_SEC
    assert frames == [{"type": "error", "id": None, "code": "unauthorized", "message": "this agent key was revoked"}]


async def test_revoking_the_key_closes_a_socket_that_has_not_registered_yet(alice):
    key, secret = alice
    sock = await Socket(secret).open()
    assert (await sock.call("heartbeat"))["type"] == "heartbeat_ack"

    await sync_to_async(services.key_revoke)(key_id=key.prefix)
    revoked_at = time.monotonic()
    code, _, closed_at = await sock.closed_with()

    assert code == 4401
    assert closed_at - revoked_at < WITHIN_SEC
    assert not await sync_to_async(Message.objects.exists)()


async def test_a_socket_closes_with_4401_when_its_key_expires(alice):
    key, secret = alice
    expires = timezone.now() + timedelta(seconds=1.5)
    await sync_to_async(AgentKey.objects.filter(pk=key.pk).update)(expires_at=expires)
    sock = await Socket(secret).open()
    await sock.call("register")

    code, frames, _ = await sock.closed_with(timeout=4)

    assert code == 4401
    assert expires <= timezone.now() < expires + timedelta(seconds=WITHIN_SEC)
    assert frames[-1]["message"] == "this agent key was expired"


async def test_a_scoped_socket_posts_only_in_its_rooms(olivia):
    sock = await Socket(olivia[1]).open()
    await sock.call("register")

    to_general = await sock.call("post", channel="general", body="hello all")
    broadcast = await sock.call("broadcast", body="hello all")
    to_ops = await sock.call("post", channel="ops", body="ops only")

    assert (to_general["code"], broadcast["code"]) == ("forbidden", "forbidden")
    assert to_general["message"] == "this key is limited to rooms ops; general is not one"
    assert to_ops["message"]["channel"] == "ops"
    await sock.close()


async def test_a_scoped_socket_cannot_subscribe_to_another_room_and_keeps_its_feed(olivia):
    sock = await Socket(olivia[1]).open()
    await sock.call("register")

    refused = await sock.call("subscribe", channels=["general"])
    await post(from_agent="alice", body="general news")
    ops = await post(from_agent="alice", channel="ops", body="ops news")
    dm = await post(from_agent="alice", to_agent="olivia", body="psst")

    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert [(await sock.pushed())["message"]["id"] for _ in range(2)] == [ops["id"], dm["id"]]
    assert await sock.quiet()
    await sock.close()


async def test_a_scoped_socket_sees_task_events_of_its_rooms_only(olivia):
    sock = await Socket(olivia[1]).open()
    await sock.call("register")
    await sock.call("subscribe", types=["message", "task"])

    await post(from_agent="alice", kind="task", body="general work")
    ops_task = await post(from_agent="alice", kind="task", channel="ops", body="ops work")
    frames = [await sock.pushed(), await sock.pushed()]

    assert [f["type"] for f in frames] == ["message", "event"]
    assert frames[1]["data"]["task"]["task_id"] == ops_task["id"]
    assert await sock.quiet()
    await sock.close()


async def test_a_scoped_socket_cannot_read_the_status_of_another_rooms_task(olivia):
    sock = await Socket(olivia[1]).open()
    general_task = await post(from_agent="alice", kind="task", body="general work")
    ops_task = await post(from_agent="alice", kind="task", channel="ops", body="ops work")

    refused = await sock.call("status", task_id=general_task["id"])
    allowed = await sock.call("status", task_id=ops_task["id"])

    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert allowed["task"]["task_id"] == ops_task["id"]
    await sock.close()


async def test_a_socket_cannot_finish_someone_elses_task(alice, fresh_hub):
    _, bobs_secret = await sync_to_async(services.key_mint)(agent_id="bob")
    task = await post(from_agent="alice", to_agent="carol", kind="task_request", body="migrate")
    sock = await Socket(bobs_secret).open()
    await sock.call("register")

    answer = await sock.call("result", task_id=task["id"], success=False, body="gave up")

    # Refused as REST's /complete refuses it (parity), and nothing is stored.
    assert (answer["type"], answer["code"]) == ("error", "forbidden")
    assert answer["message"] == f"only the task's requester, assignee or claimant may answer task {task['id']}"
    assert await sync_to_async(lambda: Task.objects.get(pk=task["id"]).status)() == "open"
    assert await sync_to_async(Message.objects.filter(kind="task_result").count)() == 0
    await sock.close()


async def test_a_socket_is_rate_limited_per_agent(alice, settings):
    settings.ARC_RATE_LIMIT = (5, 60.0, 2)
    sock = await Socket(alice[1]).open()
    await sock.call("register")

    answers = [await sock.call("post", body=f"m{i}") for i in range(3)]

    assert [a["type"] for a in answers] == ["posted", "posted", "error"]
    assert answers[-1]["code"] == "rate_limited"
    assert 1 <= answers[-1]["retry_after"] <= 12
    await sock.close()
