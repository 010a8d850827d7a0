"""``GET /v1/stream`` (Server-Sent Events) and long-poll wake-ups against a live hub."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.hubproc import Hub

pytestmark = pytest.mark.live


def _events(response: requests.Response) -> Iterator[tuple[int, dict]]:
    """Yield ``(id, message)`` for each SSE event, skipping comments."""
    event_id = None
    for chunk in response.iter_lines():
        raw = chunk.decode()
        if raw.startswith("id: "):
            event_id = int(raw[4:])
        elif raw.startswith("data: "):
            assert event_id is not None
            yield event_id, json.loads(raw[6:])
            event_id = None


def _post(hub: Hub, **payload: object) -> dict:
    status, body = hub.call("POST", "/v1/messages", payload)
    assert status == 201, body
    return body["result"]


def _read(response: requests.Response, count: int) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    for item in _events(response):
        out.append(item)
        if len(out) == count:
            break
    return out


def test_the_stream_sends_visible_messages_with_ids_and_hides_other_agents_dms(live_hub: Hub) -> None:
    first = _post(live_hub, from_agent="alice", body="before bob connected")
    with requests.get(
        f"{live_hub.url}/v1/stream", params={"agent_id": "bob", "since_id": first["id"]}, stream=True, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        _post(live_hub, from_agent="alice", to_agent="carol", body="for carol only")
        dm = _post(live_hub, from_agent="alice", to_agent="bob", body="for bob")
        broadcast = _post(live_hub, from_agent="alice", body="for everyone")
        received = _read(response, 2)
    assert [(i, m["body"]) for i, m in received] == [(dm["id"], "for bob"), (broadcast["id"], "for everyone")]
    assert received[1][1] == broadcast


def test_the_stream_resumes_after_last_event_id_without_gaps_or_duplicates(live_hub: Hub) -> None:
    posted = [_post(live_hub, from_agent="alice", body=f"m{i}") for i in range(5)]
    headers = {"Last-Event-ID": str(posted[1]["id"])}
    with requests.get(
        f"{live_hub.url}/v1/stream", params={"agent_id": "bob"}, headers=headers, stream=True, timeout=10
    ) as response:
        received = _read(response, 3)
    assert [i for i, _ in received] == [m["id"] for m in posted[2:]]


def test_the_stream_filters_rooms_and_excludes_self(live_hub: Hub) -> None:
    live_hub.call("POST", "/v1/channels", {"name": "builds"})
    start = _post(live_hub, from_agent="alice", body="start")["id"]
    params = {"agent_id": "bob", "since_id": start, "channels": "builds", "exclude_self": "1"}
    with requests.get(f"{live_hub.url}/v1/stream", params=params, stream=True, timeout=10) as response:
        _post(live_hub, from_agent="alice", body="general chatter")
        _post(live_hub, from_agent="bob", channel="builds", body="my own")
        wanted = _post(live_hub, from_agent="alice", channel="builds", body="build green")
        received = _read(response, 1)
    assert received == [(wanted["id"], wanted)]


def test_a_waiting_long_poll_returns_soon_after_another_client_posts(live_hub: Hub) -> None:
    since = _post(live_hub, from_agent="alice", body="warm-up")["id"]
    answer: dict = {}

    def wait() -> None:
        started = time.monotonic()
        status, body = live_hub.call("GET", f"/v1/events?agent_id=bob&since_id={since}&timeout=20")
        answer.update(status=status, body=body, waited=time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    posted_at = time.monotonic()
    message = _post(live_hub, from_agent="alice", body="wake up")
    waiter.join(20)
    assert answer["status"] == 200
    assert [m["id"] for m in answer["body"]["result"]] == [message["id"]]
    assert answer["waited"] < 20
    assert time.monotonic() - posted_at < 1.0  # answered within a second of the post, not at the window's end


def test_the_hub_stops_cleanly_while_clients_are_waiting(live_hub: Hub) -> None:
    """SIGTERM with a stream and a long-poll open: exit status 0 (it used to die in a segfault)."""
    stream = requests.get(f"{live_hub.url}/v1/stream", params={"agent_id": "carol"}, stream=True, timeout=10)

    def wait() -> None:
        with contextlib.suppress(OSError):  # the hub closes it on shutdown
            live_hub.call("GET", "/v1/events?agent_id=carol&timeout=30")

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    next(stream.iter_lines())  # the stream is open
    time.sleep(0.3)
    assert live_hub.stop() == 0
    assert "Arc hub stopped." in live_hub.output
    stream.close()
