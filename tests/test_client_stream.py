"""``ArcClient.stream()`` (SSE), delivery receipts, ``message_status()`` and ``wait_for()``.

Against real hub processes, plus a scripted stand-in server where the test must
control exactly what the wire carries (reconnect delays, ``Last-Event-ID``).

Personas: ``alice`` posts and coordinates; ``bob`` is the worker who listens on
the stream; ``carol`` arrives late (``wait_for``) or is a bystander.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from coordination import client as client_module
from coordination.client import TRANSPORT_ERROR_STATUS, ArcClient, ArcError, _SSEParser
from tests.hubproc import Hub, live_database, start_hub

pytestmark = pytest.mark.live

# A pushed message reaches a connected stream well inside this (the hub wakes the stream on commit).
PUSH_SEC = 1.0


class Reader:
    """Runs ``client.stream(**options)`` in a thread, so a test can post while it waits with a time limit."""

    def __init__(self, client: ArcClient, **options: Any) -> None:
        self.client = client
        self.items: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(options,), daemon=True)
        self.thread.start()

    def _run(self, options: dict[str, Any]) -> None:
        try:
            for item in self.client.stream(**options):
                self.items.put((time.monotonic(), item))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread by take()
            self.error = exc

    def take_timed(self, count: int, timeout: float = 10.0) -> list[tuple[float, dict[str, Any]]]:
        """The next ``count`` items with the time each arrived; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        out: list[tuple[float, dict[str, Any]]] = []
        while len(out) < count:
            if self.error is not None:
                raise AssertionError(f"the stream failed: {self.error!r}") from self.error
            try:
                out.append(self.items.get(timeout=max(0.0, min(0.1, deadline - time.monotonic()))))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"got {len(out)} of {count} stream items in {timeout:g}s: {out}") from None
        return out

    def take(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [item for _, item in self.take_timed(count, timeout)]

    def nothing_within(self, seconds: float) -> bool:
        try:
            extra = self.items.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected stream item: {extra}")

    def stop(self) -> None:
        self.client.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "close() did not stop the stream"


@pytest.fixture
def readers() -> Iterator[list[Reader]]:
    started: list[Reader] = []
    yield started
    for reader in started:
        reader.client.close()


def _reader(readers: list[Reader], client: ArcClient, **options: Any) -> Reader:
    reader = Reader(client, **options)
    readers.append(reader)
    return reader


@pytest.fixture
def alice(live_hub: Hub) -> Iterator[ArcClient]:
    with ArcClient.quickstart("alice", live_hub.url, capabilities=["plan"]) as client:
        client.bootstrap()
        yield client


@pytest.fixture
def bob(live_hub: Hub) -> Iterator[ArcClient]:
    with ArcClient.quickstart("bob", live_hub.url, capabilities=["code"]) as client:
        client.bootstrap()
        yield client


def _connected(reader: Reader, alice: ArcClient) -> None:
    """Wait until ``reader``'s stream is open, by sending it one message through."""
    warm_up = alice.post("general", "warm-up")
    assert [m["id"] for m in reader.take(1)] == [warm_up["id"]]


# ── messages and events ───────────────────────────────────────────────────


def test_the_stream_yields_each_message_within_a_second_and_moves_the_shared_cursor(
    readers: list[Reader], alice: ArcClient, bob: ArcClient
) -> None:
    before = alice.post("general", "before bob listened")
    bob.bootstrap()  # the stream starts at bob's cursor, which is now past it
    reader = _reader(readers, bob)
    _connected(reader, alice)
    posted, latencies = [], []
    for i in range(5):
        started = time.monotonic()
        posted.append(alice.post("general", f"step {i}", thread_id="t-steps"))
        [(arrived, message)] = reader.take_timed(1)
        latencies.append(arrived - started)
        assert message == posted[-1]
    assert max(latencies) < PUSH_SEC, latencies
    reader.stop()

    assert bob.since_id == posted[-1]["id"]
    assert bob.poll(timeout=0) == []  # what the stream yielded is not news to poll()
    assert before["id"] < posted[0]["id"]


def test_the_default_stream_has_messages_only_and_types_adds_named_events(
    readers: list[Reader], alice: ArcClient, bob: ArcClient
) -> None:
    bob_plain = ArcClient("bob", bob.base_url)
    plain = _reader(readers, bob_plain, since_id=bob.since_id)
    with_claims = _reader(readers, bob, types=["message", "claim"])
    _connected(plain, alice)
    with_claims.take(1)  # the warm-up

    claim = alice.claim("build-7", ttl_sec=60)
    after = alice.post("general", "claimed build-7")

    [event, message] = with_claims.take(2)
    assert event["event"] == "claim"
    assert event["action"] == "acquired"
    assert (event["claim"]["claim_key"], event["claim"]["owner_agent_id"]) == ("build-7", "alice")
    assert event["claim"] == claim
    assert message == after
    assert plain.take(1) == [after]  # no claim event before it


def test_types_without_message_yields_only_named_events(
    readers: list[Reader], alice: ArcClient, bob: ArcClient
) -> None:
    reader = _reader(readers, bob, types="lock")
    alice.post("general", "not wanted")
    alice.lock("src/app.py", ttl_sec=60)
    [event] = reader.take(1)
    assert (event["event"], event["action"], event["lock"]["file_path"]) == ("lock", "acquired", "src/app.py")
    assert reader.nothing_within(0.5)


def test_the_channels_filter_narrows_the_rooms(
    readers: list[Reader], live_hub: Hub, alice: ArcClient, bob: ArcClient
) -> None:
    live_hub.call("POST", "/v1/channels", {"name": "builds"})
    live_hub.call("POST", "/v1/channels", {"name": "deploys"})
    reader = _reader(readers, bob, channels=["builds", "deploys"])
    alice.post("general", "chatter")
    build = alice.post("builds", "build green")
    alice.post("general", "more chatter")
    deploy = alice.post("deploys", "deployed")
    assert reader.take(2) == [build, deploy]
    assert reader.nothing_within(0.5)


def test_exclude_self_hides_own_posts_unless_turned_off(
    readers: list[Reader], live_hub: Hub, alice: ArcClient, bob: ArcClient
) -> None:
    bob_poster = ArcClient("bob", live_hub.url)  # the readers' clients belong to their threads
    since = bob.since_id
    others_only = _reader(readers, bob)
    everything = _reader(readers, ArcClient("bob", live_hub.url), exclude_self=False, since_id=since)
    mine = bob_poster.post("general", "my own")
    theirs = alice.post("general", "from alice")
    assert others_only.take(1) == [theirs]
    assert everything.take(2) == [mine, theirs]


def test_breaking_out_of_the_loop_closes_the_response(alice: ArcClient, bob: ArcClient) -> None:
    alice.post("general", "one")
    alice.post("general", "two")
    stream = bob.stream()
    assert next(stream)["body"] == "one"
    handle = next(iter(bob._streams))
    assert handle.response is not None
    stream.close()
    assert not bob._streams
    assert handle.response.raw.closed
    assert bob.poll(timeout=0)[0]["body"] == "two"  # the shared cursor stopped at "one"


# ── resuming ──────────────────────────────────────────────────────────────


def test_the_stream_resumes_across_a_hub_kill_and_restart_without_gaps_or_duplicates(
    tmp_path: Path, readers: list[Reader], monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    real_sleep = client_module._backoff_sleep

    def record(delay: float, stop: threading.Event) -> None:
        delays.append(delay)
        real_sleep(delay, stop)

    monkeypatch.setattr(client_module, "_backoff_sleep", record)
    home = tmp_path / "hub"
    with live_database() as database_url:
        hub = start_hub(home, database_url=database_url)
        port = int(urlsplit(hub.url).port or 0)
        try:
            alice = ArcClient.quickstart("alice", hub.url)
            bob = ArcClient.quickstart("bob", hub.url)
            bob.bootstrap()
            reader = _reader(readers, bob, max_backoff=0.5)
            posted = [alice.post("general", f"before {i}") for i in range(3)]
            received = reader.take(3)

            hub.stop(signal.SIGKILL)
            time.sleep(1.0)  # the stream sees the drop and retries against a closed port
            assert delays, "the stream did not notice the hub was gone"
            hub = start_hub(home, database_url=database_url, port=port)
            assert hub.url.endswith(f":{port}")

            posted += [alice.post("general", f"after restart {i}") for i in range(3)]
            received += reader.take(3, timeout=15)
            posted += [alice.post("general", f"after reconnect {i}") for i in range(2)]
            received += reader.take(2)
            assert reader.nothing_within(0.5)
        finally:
            hub.stop()

    ids = [m["id"] for m in received]
    assert ids == [m["id"] for m in posted]
    assert ids == sorted(set(ids))  # strictly increasing: no duplicate, none out of order
    assert [m["body"] for m in received] == [m["body"] for m in posted]
    assert max(delays) <= 0.5
    assert bob.since_id == ids[-1]


class _ScriptedHandler(BaseHTTPRequestHandler):
    """A stand-in hub: each ``GET /v1/stream`` plays the next script, then 503 once they run out.

    A script is a list of byte chunks, each sent as one HTTP chunk, then the end of the stream.
    """

    protocol_version = "HTTP/1.1"
    scripts: ClassVar[list[list[bytes]]] = []
    seen: ClassVar[list[tuple[dict[str, list[str]], str | None]]] = []

    def do_GET(self) -> None:
        type(self).seen.append((parse_qs(urlsplit(self.path).query), self.headers.get("Last-Event-ID")))
        if not type(self).scripts:
            body = b'{"ok": false, "error": "restarting"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        script = type(self).scripts.pop(0)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in script:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted_hub() -> Iterator[tuple[str, type[_ScriptedHandler]]]:
    handler = type("Handler", (_ScriptedHandler,), {"scripts": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


class _Ceiling:
    """Stands in for the jitter source: records each range and picks its top (or its bottom)."""

    def __init__(self, pick_top: bool = True) -> None:
        self.pick_top = pick_top
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return high if self.pick_top else low


def _stop_after(count: int, delays: list[float]) -> Any:
    def record(delay: float, stop: threading.Event) -> None:
        delays.append(delay)
        if len(delays) >= count:
            stop.set()

    return record


def test_reconnect_delays_double_up_to_the_cap_with_full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    closed_port = ArcClient("bob", "http://127.0.0.1:9")  # discard port: connection refused at once
    ceiling = _Ceiling()
    delays: list[float] = []
    monkeypatch.setattr(client_module, "_random", ceiling)
    monkeypatch.setattr(client_module, "_backoff_sleep", _stop_after(9, delays))
    assert list(closed_port.stream(max_backoff=2.0)) == []  # stopped after nine attempts, nothing yielded
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0])
    assert all(low == 0.0 for low, _ in ceiling.ranges)  # full jitter: anywhere from zero to the ceiling

    floor = _Ceiling(pick_top=False)
    monkeypatch.setattr(client_module, "_random", floor)
    delays.clear()
    assert list(closed_port.stream(max_backoff=2.0)) == []
    assert delays == [0.0] * 9

    monkeypatch.undo()
    jittered: list[float] = []
    monkeypatch.setattr(client_module, "_backoff_sleep", _stop_after(40, jittered))
    assert list(closed_port.stream(max_backoff=0.8)) == []
    ceilings = [min(0.8, 0.1 * 2**i) for i in range(40)]
    assert all(0.0 <= d <= c for d, c in zip(jittered, ceilings, strict=True))
    assert len(set(jittered)) > 30  # random, not the ceiling every time
    assert sum(jittered[10:]) / 30 < 0.7  # averaging half the cap, not pinned at it


def test_without_reconnect_an_unreachable_hub_is_an_arc_error() -> None:
    with pytest.raises(ArcError) as refused:
        next(ArcClient("bob", "http://127.0.0.1:9").stream(reconnect=False))
    assert refused.value.status == TRANSPORT_ERROR_STATUS
    assert "cannot reach the hub" in refused.value.error


def test_a_successful_connect_resets_the_delay_and_resumes_after_the_last_id(
    monkeypatch: pytest.MonkeyPatch, scripted_hub: tuple[str, type[_ScriptedHandler]]
) -> None:
    url, handler = scripted_hub
    handler.scripts = [
        [b": connected\n\n", b'id: 1\ndata: {"id": 1, "body": "one"}\n\n'],
        [b'id: 2\ndata: {"id": 2, "body": "two"}\n\n'],
        [b'id: 3\ndata: {"id": 3, "body": "three"}\n\n'],
    ]
    # The rule, whatever the machine allows: each pause is the base doubled once per connect that
    # failed since the last one that succeeded (a busy machine may refuse a connect, or lose one).
    timeline: list[tuple[str, float | None]] = []
    real_connect = ArcClient._stream_connect

    def connect(self: ArcClient, *args: Any, **kwargs: Any) -> Any:
        response = real_connect(self, *args, **kwargs)
        timeline.append(("connected" if response is not None else "failed", None))
        return response

    def pause(delay: float, stop: threading.Event) -> None:
        timeline.append(("pause", delay))
        if sum(1 for kind, _ in timeline if kind == "pause") >= 6:
            stop.set()

    monkeypatch.setattr(ArcClient, "_stream_connect", connect)
    monkeypatch.setattr(client_module, "_random", _Ceiling())
    monkeypatch.setattr(client_module, "_backoff_sleep", pause)
    bob = ArcClient("bob", url)

    assert [m["body"] for m in bob.stream(channels="builds")] == ["one", "two", "three"]
    failed_since_success = 0
    for kind, delay in timeline:
        if kind == "pause":
            assert delay == pytest.approx(min(30.0, 0.1 * 2**failed_since_success)), timeline
            failed_since_success += 1
        elif kind == "connected":
            failed_since_success = 0
    assert [kind for kind, _ in timeline].count("connected") >= 3  # the three streams, and maybe a 503
    resumed_from = [last_event_id for _, last_event_id in handler.seen]
    # Every connect that reached the hub resumed after the last id it had yielded.
    assert resumed_from[:4] == [None, "1", "2", "3"]
    assert set(resumed_from[4:]) <= {"3"}
    first_query = handler.seen[0][0]
    assert first_query == {"agent_id": ["bob"], "exclude_self": ["1"], "channels": ["builds"], "since_id": ["0"]}
    assert bob.since_id == 3


def test_an_error_answer_is_raised_not_retried(live_hub: Hub, bob: ArcClient) -> None:
    with pytest.raises(ArcError) as bad_types:
        next(bob.stream(types=["message", "weather"]))
    assert bad_types.value.status == 400
    assert "unknown event types: weather" in bad_types.value.error


def test_it_parses_server_sent_events_split_anywhere() -> None:
    wire = (
        "\ufeff: a comment\r\n"
        "retry: 5000\r\n"
        "id: 7\r\n"
        'data: {"id": 7,\r\n'
        'data:"body": "two lines"}\r\n'
        "\r\n"
        "event: claim\r"
        'data: {"action": "acquired"}\r'
        "\r"
        "data\n"  # a field with no colon: an empty data line
        "\n"
        "event: ignored, no data\n"
        "\n"
        "id: 8\n"
        "data: cut off by the end of the stream"
    ).encode()
    expected = [
        ("message", '{"id": 7,\n"body": "two lines"}', "7"),
        ("claim", '{"action": "acquired"}', "7"),  # an event without id keeps the last one
        ("message", "", "7"),
    ]
    whole = _SSEParser().feed(wire)
    assert [(e.event, e.data, e.id) for e in whole] == expected
    for size in (1, 2, 3, 7):
        parser = _SSEParser()
        events = [e for i in range(0, len(wire), size) for e in parser.feed(wire[i : i + size])]
        assert [(e.event, e.data, e.id) for e in events] == expected, size


# ── delivery truth and waiting for peers ──────────────────────────────────


def test_message_status_shows_delivered_once_bobs_stream_received_the_dm(
    readers: list[Reader], alice: ArcClient, bob: ArcClient
) -> None:
    reader = _reader(readers, bob)
    dm = alice.dm("bob", "psst")
    assert alice.last_receipt == {"recipients": 1, "delivery": {"bob": "queued"}}
    assert reader.take(1) == [dm]

    deadline = time.monotonic() + 1.5  # deliveries are recorded in batches every 0.25 s
    while True:
        status = alice.message_status(dm["id"])
        states = {r["agent_id"]: r["state"] for r in status["recipients"]}
        if states == {"bob": "delivered"} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert states == {"bob": "delivered"}
    assert (status["message_id"], status["to_agent"]) == (dm["id"], "bob")


def test_last_receipt_warns_when_nobody_is_live(
    live_hub: Hub, alice: ArcClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="arc.client"):
        alone = alice.post("general", "anyone there?")
    assert alone["body"] == "anyone there?"  # post() still returns the message
    assert alice.last_receipt is not None
    assert alice.last_receipt["recipients"] == 0
    assert "no other agent is live" in alice.last_receipt["warning"]
    assert [r.getMessage() for r in caplog.records] == [
        f"message {alone['id']} from alice in general: {alice.last_receipt['warning']}"
    ]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arc.client"):
        alice.dm("zed", "are you there?")
    assert alice.last_receipt["delivery"] == {"zed": "queued"}
    assert "zed is not live" in alice.last_receipt["warning"]
    assert len(caplog.records) == 1

    ArcClient.quickstart("bob", live_hub.url)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arc.client"):
        alice.post("general", "hello bob")
    assert alice.last_receipt == {"recipients": 1}
    assert caplog.records == []


def test_wait_for_returns_when_the_next_agent_registers(live_hub: Hub, alice: ArcClient, bob: ArcClient) -> None:
    registered: dict[str, float] = {}

    def carol_arrives() -> None:
        ArcClient.quickstart("carol", live_hub.url, capabilities=["code"])
        registered["at"] = time.monotonic()

    timer = threading.Timer(0.5, carol_arrives)
    timer.start()
    started = time.monotonic()
    roster = alice.wait_for(3, timeout=20)
    returned = time.monotonic()
    timer.join()
    assert sorted(a["agent_id"] for a in roster) == ["alice", "bob", "carol"]
    assert returned - started < 10
    assert returned - registered["at"] < PUSH_SEC

    coders = alice.wait_for(2, capability="code", timeout=1)
    assert sorted(a["agent_id"] for a in coders) == ["bob", "carol"]


def test_wait_for_times_out_with_408_and_the_roster_count(alice: ArcClient, bob: ArcClient) -> None:
    started = time.monotonic()
    with pytest.raises(ArcError) as timed_out:
        alice.wait_for(4, timeout=0.5)
    assert timed_out.value.status == 408
    assert "only 2 of 4 agents live after 0.5s" in timed_out.value.error
    assert 0.5 <= time.monotonic() - started < 5
