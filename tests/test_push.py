"""Push: committed changes reach waiting clients through the channel layer, on in-memory and Redis.

In-process tests drive the event dispatcher and the long-poll view directly;
live tests run real hubs, and on Redis two hub processes, where a post through
one must reach a stream held by the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from asgiref.sync import sync_to_async
from django.test import override_settings

from coordination.core import events, selectors, services
from tests.hubproc import Hub, live_database, start_hub

REDIS_URL = os.environ.get("ARC_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10_000}}}
REDIS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}


def _redis_reachable() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False
    return True


needs_redis = pytest.mark.skipif(
    not _redis_reachable(), reason=f"Redis is not reachable at {REDIS_URL} (set ARC_TEST_REDIS_URL)"
)
LAYERS = [pytest.param(IN_MEMORY, id="in-memory"), pytest.param(REDIS, id="redis", marks=needs_redis)]


@pytest.fixture
def fresh_dispatcher(monkeypatch: pytest.MonkeyPatch) -> events.Dispatcher:
    """A dispatcher of this test's own (each test has its own event loop and layer)."""
    dispatcher = events.Dispatcher()
    monkeypatch.setattr(events, "dispatcher", dispatcher)
    return dispatcher


@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.django_db(transaction=True)
async def test_a_committed_post_reaches_a_listener_through_the_layer(
    layers: dict, fresh_dispatcher: events.Dispatcher
) -> None:
    with override_settings(CHANNEL_LAYERS=layers):
        await sync_to_async(services.rooms_ensure_defaults)()
        received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await fresh_dispatcher.add(received.put_nowait)
        message = await sync_to_async(services.message_post)(from_agent="alice", body="hello")
        event = await asyncio.wait_for(received.get(), 2)
        assert event["event"] == "message"
        assert event["id"] == message.id
        assert event["message"]["body"] == "hello"
        assert event["prev_id"] < message.id


@pytest.mark.django_db(transaction=True)
async def test_nothing_is_published_for_a_rolled_back_change(fresh_dispatcher: events.Dispatcher) -> None:
    from django.db import transaction

    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        await sync_to_async(services.rooms_ensure_defaults)()
        received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await fresh_dispatcher.add(received.put_nowait)

        def post_then_fail() -> None:
            with transaction.atomic():
                services.message_post(from_agent="alice", body="never")
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await sync_to_async(post_then_fail)()
        kept = await sync_to_async(services.message_post)(from_agent="alice", body="kept")
        event = await asyncio.wait_for(received.get(), 2)
        assert event["id"] == kept.id
        assert received.empty()


@pytest.mark.django_db(transaction=True)
async def test_a_waiting_long_poll_reads_the_database_once_and_then_only_wakes_on_events(
    fresh_dispatcher: events.Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a timer loop: while nothing happens, a waiting long-poll does not query for messages."""
    from django.test import AsyncClient

    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        await sync_to_async(services.rooms_ensure_defaults)()
        reads = []
        real = selectors.messages_feed

        def counting(**kwargs: Any) -> Any:
            reads.append(kwargs)
            return real(**kwargs)

        monkeypatch.setattr(selectors, "messages_feed", counting)
        started = time.monotonic()
        response = await AsyncClient().get("/v1/events", {"agent_id": "bob", "timeout": "1.5"})
        assert response.status_code == 200
        assert response.json()["result"] == []
        assert time.monotonic() - started >= 1.4
        assert len(reads) <= 1  # the backlog read (none at all when the hub has no messages)


# ── Live hubs ─────────────────────────────────────────────────────────────


def _sse(
    hub: Hub, agent: str, since: int, out: list[tuple[float, dict]], ready: threading.Event, stop: threading.Event
) -> None:
    params: dict[str, str | int] = {"agent_id": agent, "since_id": since}
    try:
        with requests.get(f"{hub.url}/v1/stream", params=params, stream=True, timeout=30) as response:
            for raw in response.iter_lines():
                line = raw.decode()
                if line.startswith(": connected"):
                    ready.set()
                if line.startswith("data: "):
                    out.append((time.monotonic(), json.loads(line[6:])))
                if stop.is_set():
                    return
    except requests.RequestException:
        return  # the hub went away at teardown


def _post(hub: Hub, body: str, agent: str = "alice") -> tuple[float, dict]:
    sent = time.monotonic()
    status, envelope = hub.call("POST", "/v1/messages", {"from_agent": agent, "body": body})
    assert status == 201
    return sent, envelope["result"]


@pytest.fixture
def redis_hubs(tmp_path: Path) -> Iterator[tuple[Hub, Hub]]:
    """Two hub processes on one database and one Redis channel layer."""
    if not _redis_reachable():
        pytest.skip(f"Redis is not reachable at {REDIS_URL} (set ARC_TEST_REDIS_URL)")
    with live_database() as database_url:
        env = {"ARC_REDIS_URL": REDIS_URL}
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
def test_a_post_through_one_worker_reaches_a_stream_on_another(redis_hubs: tuple[Hub, Hub]) -> None:
    writer_hub, reader_hub = redis_hubs
    received: list[tuple[float, dict]] = []
    ready, stop = threading.Event(), threading.Event()
    start = _post(writer_hub, "before")[1]["id"]
    reader = threading.Thread(target=_sse, args=(reader_hub, "bob", start, received, ready, stop), daemon=True)
    reader.start()
    assert ready.wait(10)
    sent: list[tuple[float, dict]] = []
    for i in range(20):
        # Alternate workers: ids interleave across processes, and the stream must stay gap-free.
        sent.append(_post((writer_hub, reader_hub)[i % 2], f"m{i}"))
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while len(received) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert [m["id"] for _, m in received] == [m["id"] for _, m in sent]
    lags = [got - posted for (posted, _), (got, _) in zip(sent, received, strict=True)]
    assert max(lags) < 1.0, lags


@pytest.mark.live
def test_a_long_poll_on_one_worker_wakes_for_a_post_on_another(redis_hubs: tuple[Hub, Hub]) -> None:
    writer_hub, reader_hub = redis_hubs
    since = _post(writer_hub, "before")[1]["id"]
    answer: dict[str, Any] = {}

    def wait() -> None:
        status, envelope = reader_hub.call("GET", f"/v1/events?agent_id=bob&since_id={since}&timeout=20")
        answer.update(status=status, result=envelope["result"], at=time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    posted_at, message = _post(writer_hub, "wake up")
    waiter.join(20)
    assert answer["status"] == 200
    assert [m["id"] for m in answer["result"]] == [message["id"]]
    assert answer["at"] - posted_at < 1.0


@pytest.mark.live
def test_wait_for_returns_once_enough_agents_are_live(live_hub: Hub) -> None:
    answer: dict[str, Any] = {}

    def wait() -> None:
        started = time.monotonic()
        status, envelope = live_hub.call("GET", "/v1/agents?wait_for=2&timeout=20")
        answer.update(status=status, envelope=envelope, waited=time.monotonic() - started)

    live_hub.call("POST", "/v1/sessions", {"agent_id": "alice"})
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    live_hub.call("POST", "/v1/sessions", {"agent_id": "bob"})
    waiter.join(20)
    assert answer["status"] == 200
    assert answer["envelope"]["ready"] is True
    assert {a["agent_id"] for a in answer["envelope"]["result"]} == {"alice", "bob"}
    assert answer["waited"] < 5

    status, envelope = live_hub.call("GET", "/v1/agents?wait_for=3&timeout=0.5")
    assert status == 200
    assert envelope["ready"] is False
    assert len(envelope["result"]) == 2


@pytest.mark.live
def test_delivery_truth_for_direct_and_broadcast_posts(live_hub: Hub) -> None:
    status, lonely = live_hub.call("POST", "/v1/messages", {"from_agent": "alice", "body": "anyone?"})
    assert status == 201
    assert lonely["recipients"] == 0
    assert "no other agent is live" in lonely["warning"]

    live_hub.call("POST", "/v1/sessions", {"agent_id": "bob"})
    status, dm = live_hub.call("POST", "/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": "for bob"})
    assert dm["recipients"] == 1
    assert dm["delivery"] == {"bob": "queued"}
    assert "warning" not in dm
    _, before = live_hub.call("GET", f"/v1/messages/{dm['result']['id']}/status")
    assert before["result"]["recipients"][0]["state"] == "queued"

    status, feed = live_hub.call("GET", "/v1/events?agent_id=bob&since_id=0")
    assert dm["result"]["id"] in [m["id"] for m in feed["result"]]
    _, after = live_hub.call("GET", f"/v1/messages/{dm['result']['id']}/status")
    assert after["result"]["recipients"][0]["state"] == "delivered"
    _, broadcast = live_hub.call("GET", f"/v1/messages/{lonely['result']['id']}/status")
    assert broadcast["result"]["recipients"] == [{"agent_id": "bob", "state": "delivered"}]
    status, missing = live_hub.call("GET", "/v1/messages/999999/status")
    assert status == 404
    assert missing["error"] == "message not found"


def test_the_dispatcher_calls_a_reader_only_for_what_it_can_see() -> None:
    """An idle reader of another room costs nothing per post: it is not even called."""
    dispatcher = events.Dispatcher()
    seen: dict[str, list[int]] = {"ops": [], "bob": [], "all": [], "claims": []}
    listeners = {name: (lambda event, name=name: seen[name].append(event.get("id", 0))) for name in seen}
    dispatcher._listeners = {}
    for name, route in (
        ("ops", events.Route(rooms=frozenset({"ops"}))),
        ("bob", events.Route(rooms=frozenset(), agent_id="bob")),
        ("all", events.Route()),
        ("claims", events.Route(rooms=frozenset(), kinds=frozenset({"claim"}))),
    ):
        for bucket in dispatcher._routes.buckets(listeners[name], route):
            bucket.add(listeners[name])

    def message(mid: int, channel: str, to_agent: str | None = None) -> dict[str, Any]:
        return {"event": "message", "id": mid, "channel": channel, "to_agent": to_agent}

    dispatcher.deliver(message(1, "general"))
    dispatcher.deliver(message(2, "ops"))
    dispatcher.deliver(message(3, "direct", to_agent="bob"))
    dispatcher.deliver(message(4, "direct", to_agent="carol"))
    dispatcher.deliver({"event": "claim", "id": 5})
    assert seen == {"ops": [2], "bob": [3], "all": [1, 2], "claims": [5]}


@pytest.mark.django_db(transaction=True)
def test_a_request_still_publishing_after_the_serving_loop_stopped_does_not_wait_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hub stopping (SIGTERM) while a worker thread commits: its event is dropped, not waited on forever.

    The worker runs under ``sync_to_async`` on the serving loop, as a request does; the loop
    stops before the worker publishes. Waiting for the stopped loop would leave the thread
    (and so the process, which joins it at exit) hanging: measured as a hub that ignored
    SIGTERM until killed.
    """
    monkeypatch.setattr(events, "_loop", None)
    loop = asyncio.new_event_loop()
    go, published = threading.Event(), threading.Event()
    tasks: list[asyncio.Future[Any]] = []

    def request_work() -> None:
        go.wait(10)
        events.publish("delivery", {"message_id": 1, "agent_id": "bob"})  # no transaction: at once
        published.set()

    async def serve() -> None:
        events.bind_loop(asyncio.get_running_loop())
        tasks.append(asyncio.ensure_future(sync_to_async(request_work)()))
        await asyncio.sleep(0.05)  # the worker thread is running and waits for go
        loop.stop()

    try:
        tasks.append(loop.create_task(serve()))
        loop.run_forever()  # returns once serve() stops the loop
        go.set()
        assert published.wait(10), "the worker thread waited for the stopped loop"
    finally:
        go.set()
        loop.run_until_complete(asyncio.sleep(0.2))  # let a hung worker finish, so the suite can exit
        loop.close()
