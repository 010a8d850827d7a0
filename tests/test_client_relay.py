"""``ArcClient.over_relay()``: the project's client through the hub's file-spool relay.

Against a real hub process (``manage.py up``, which serves its relay on a spool
inside the test's temporary directory), plus a spool no relay serves, for the
client's own failures. Arc's own ``ArcClient.over_relay`` runs the same calls at
the end (skipped when ``arc.py`` cannot be fetched).

Personas: ``bob`` is the sandboxed agent, who reaches the hub only through the
spool; ``alice`` coordinates over HTTP; ``carol`` is a worker over HTTP; ``dave``
holds an agent key; ``mallory`` borrows dave's key; ``dora`` runs Arc's client.
One hub serves the module: each test uses rooms and claim keys of its own.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from coordination import client as client_module
from coordination.client import (
    RELAY_TIMEOUT_STATUS,
    RELAY_WRITE_ERROR_STATUS,
    ArcClient,
    ArcError,
    spool_name,
)
from tests import arcref
from tests.hubproc import Hub, mint_key, running_hub

# A message posted over HTTP reaches a waiting relay long-poll well inside this: the hub
# wakes the long-poll on commit, and the client looks for the answer every 50 ms at most.
PUSH_SEC = 1.0
_rooms = itertools.count(1)


@pytest.fixture(scope="module")
def relay_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Path]]:
    """A live hub whose relay serves ``<tmp>/spool`` (``--spool-dir``)."""
    home = tmp_path_factory.mktemp("client-relay")
    spool = home / "spool"
    with running_hub(home / "hub", args=("--spool-dir", str(spool))) as hub:
        yield hub, spool


@pytest.fixture
def hub(relay_hub: tuple[Hub, Path]) -> Hub:
    return relay_hub[0]


@pytest.fixture
def spool(relay_hub: tuple[Hub, Path]) -> Path:
    return relay_hub[1]


def create_room(hub: Hub, name: str) -> str:
    status, envelope = hub.call("POST", "/v1/channels", {"name": name, "created_by": "alice"})
    assert status == 201, envelope
    return name


@pytest.fixture
def room(hub: Hub) -> str:
    """A room of this test's own."""
    return create_room(hub, f"room-{next(_rooms)}")


@pytest.fixture
def bob(spool: Path) -> Iterator[ArcClient]:
    client = ArcClient.over_relay("bob", spool, timeout=10)
    client.register(capabilities=["code"])
    client.bootstrap()
    yield client
    client.close()


@pytest.fixture
def alice(hub: Hub) -> ArcClient:
    client = ArcClient.quickstart("alice", hub.url)
    client.bootstrap()
    return client


@pytest.fixture
def carol(hub: Hub) -> ArcClient:
    client = ArcClient.quickstart("carol", hub.url)
    client.bootstrap()
    return client


@pytest.fixture(scope="module")
def admin_key(relay_hub: tuple[Hub, Path]) -> str:
    return mint_key(relay_hub[0], "root", "--admin")


def close_room(hub: Hub, admin_key: str, name: str) -> None:
    response = requests.post(
        f"{hub.url}/v1/channels/{name}/close", json={}, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
    )
    assert response.status_code == 200, response.text


class Reader:
    """Runs ``client.stream(**options)`` in a thread, so a test can post while it waits."""

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
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def take_timed(self, count: int, timeout: float = 10.0) -> list[tuple[float, dict[str, Any]]]:
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

    def ended(self, timeout: float) -> bool:
        """Did the iteration end by itself (no error) within ``timeout`` s?"""
        self.thread.join(timeout)
        if self.error is not None:
            raise AssertionError(f"the stream failed: {self.error!r}") from self.error
        return not self.thread.is_alive()

    def stop(self) -> float:
        """``client.close()``; returns how long the iteration took to end."""
        started = time.monotonic()
        self.client.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "close() did not stop the stream"
        return time.monotonic() - started


# ── The API over the relay ────────────────────────────────────────────────


@pytest.mark.live
def test_it_registers_posts_and_polls_through_the_spool(spool: Path, alice: ArcClient, room: str) -> None:
    erin = ArcClient.over_relay("erin", spool, timeout=10)
    session = erin.register(display_name="Erin", capabilities=["review"])
    erin.bootstrap()

    posted = erin.post(room, "hello from the sandbox", thread_id="t-1")
    seen = alice.poll(timeout=5, channel=room)
    answer = alice.post(room, "hello erin")
    got = erin.poll(timeout=5, channel=room, thread_id=None)

    assert (session["agent_id"], session["capabilities"]) == ("erin", ["review"])
    assert (posted["from_agent"], posted["channel"], posted["thread_id"]) == ("erin", room, "t-1")
    assert erin.last_receipt is not None
    assert erin.last_receipt["recipients"] >= 1  # alice, at least, is live and can see it
    assert [m["id"] for m in seen] == [posted["id"]]
    assert [m["id"] for m in got] == [answer["id"]]  # its own post excluded, as over HTTP
    assert erin.since_id == answer["id"]
    assert erin.poll(timeout=0) == []
    # Arc's layout, append-only: each request was taken (renamed to .work) and answered; nothing deleted.
    taken = {p.stem for p in (spool / "requests" / "erin").iterdir()}
    answered = {p.stem for p in (spool / "responses" / "erin").iterdir()}
    assert len(taken) == 5  # register, bootstrap, post, two polls
    assert taken == answered
    assert all(p.suffix == ".work" for p in (spool / "requests" / "erin").iterdir())
    requests = [json.loads(p.read_text()) for p in (spool / "requests" / "erin").glob("*.work")]
    arc_fields = {"request_id", "agent_id", "method", "path", "body", "created_at"}
    for request in requests:  # Arc's envelope; a state change adds its idempotency key (docs/relay.md)
        extra = {"idempotency_key"} if request["method"] == "POST" else set()
        assert set(request) == arc_fields | extra, request
        assert request["agent_id"] == "erin"
    assert sorted(r["method"] for r in requests) == ["GET", "GET", "GET", "POST", "POST"]


@pytest.mark.live
def test_query_parameters_travel_in_the_path(spool: Path, bob: ArcClient, alice: ArcClient, room: str) -> None:
    posted = alice.post(room, "café & crème: ship it?")
    found = bob.search("crème", channel=room)
    requests_seen = [json.loads(p.read_text()) for p in (spool / "requests" / "bob").glob("*.work")]

    assert [m["id"] for m in found] == [posted["id"]]
    assert any(r["path"].startswith("/v1/search?q=cr%C3%A8me&limit=50&channel=room-") for r in requests_seen)


@pytest.mark.live
def test_direct_messages_round_trip(bob: ArcClient, alice: ArcClient, carol: ArcClient) -> None:
    to_alice = bob.dm("alice", "private, from the sandbox")
    to_bob = alice.dm("bob", "private, back")

    assert [m["id"] for m in alice.poll(timeout=5)] == [to_alice["id"]]
    assert [m["id"] for m in bob.poll(timeout=5)] == [to_bob["id"]]
    assert bob.last_receipt is not None
    assert set(bob.last_receipt["delivery"]) == {"alice"}
    assert carol.poll(timeout=0) == []  # neither DM is hers


@pytest.mark.live
def test_claims_and_locks_through_the_spool(bob: ArcClient, alice: ArcClient, room: str) -> None:
    mine = bob.claim(f"{room}-build", ttl_sec=60)
    theirs = alice.claim(f"{room}-build")
    refreshed = bob.refresh_claim(f"{room}-build", ttl_sec=120)
    bob.release(f"{room}-build")
    after = alice.claim(f"{room}-build")
    locked = bob.lock(f"src/{room}.py")
    refused = alice.lock(f"src/{room}.py")
    bob.unlock(f"src/{room}.py")

    assert (mine["owner_agent_id"], theirs["owner_agent_id"]) == ("bob", "bob")
    assert refreshed["owner_agent_id"] == "bob"
    assert refreshed["expires_at"] > mine["expires_at"]
    assert after["owner_agent_id"] == "alice"
    assert (locked["agent_id"], refused["agent_id"]) == ("bob", "bob")
    assert alice.lock(f"src/{room}.py")["agent_id"] == "alice"


@pytest.mark.live
def test_a_hub_error_is_the_same_arc_error_as_over_http(bob: ArcClient, hub: Hub) -> None:
    over_http = ArcClient("bob", hub.url)
    for attempt in (lambda c: c.claim(""), lambda c: c.complete_task(987654), lambda c: c.message_status(987654)):
        with pytest.raises(ArcError) as relayed:
            attempt(bob)
        with pytest.raises(ArcError) as direct:
            attempt(over_http)
        assert (relayed.value.status, relayed.value.error) == (direct.value.status, direct.value.error)
        assert relayed.value.status in (400, 404)


@pytest.mark.live
def test_a_long_poll_returns_when_a_message_is_posted_over_http(bob: ArcClient, alice: ArcClient, room: str) -> None:
    posted: dict[str, float] = {}

    def post_later() -> None:
        time.sleep(0.5)
        posted["at"] = time.monotonic()
        alice.post(room, "wake up")

    poster = threading.Thread(target=post_later)
    poster.start()
    seen = bob.poll(timeout=20)
    returned = time.monotonic()
    poster.join()

    assert [m["body"] for m in seen] == ["wake up"]
    assert returned - posted["at"] < PUSH_SEC  # pushed, not found at the long-poll's end


@pytest.mark.live
def test_the_wait_covers_the_long_poll_not_just_the_timeout(spool: Path, room: str) -> None:
    # timeout=1 is the client's allowance on top of each call's own wait: a 2.5 s long-poll is not a 598.
    bob = ArcClient.over_relay("bob", spool, timeout=1.0)
    bob.bootstrap()
    started = time.monotonic()

    assert bob.poll(timeout=2.5, channel=room) == []
    assert 2.4 <= time.monotonic() - started < 2.5 + 1.0


class Worker:
    """``carol`` over HTTP until stopped: answers task requests with a result DM, and ``asker``'s room posts."""

    def __init__(self, carol: ArcClient, room: str, asker: str) -> None:
        self.carol, self.room, self.asker = carol, room, asker
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            for message in self.carol.poll(timeout=0.5):
                if message["kind"] == "task_request":
                    self.carol.dm(message["from_agent"], "42", kind="task_result", reply_to=message["id"])
                elif message["channel"] == self.room and message["from_agent"] == self.asker:
                    self.carol.post(self.room, "yes", reply_to=message["id"])

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


@pytest.mark.live
def test_the_other_methods_work_through_the_spool(
    hub: Hub, spool: Path, alice: ArcClient, carol: ArcClient, room: str
) -> None:
    bob = ArcClient.over_relay(f"bob-{room}", spool, timeout=10)  # an inbox no other test wrote to
    bob.register()
    worker = Worker(carol, room, bob.agent_id)
    try:
        # RPC and delegation: carol, a worker over HTTP, answers by direct message.
        answer = bob.call("carol", "what is 6*7?", timeout=10)
        delegated = bob.delegate("review this", to_agent="carol", wait=10)
        # Asking a room: the long-poll on the hub returns with carol's reply.
        asked = bob.ask("ship it?", channel=room, max_replies=1, timeout=10)
        gathered = bob.gather(asked["question"]["id"], max_replies=1, timeout=5)
    finally:
        worker.stop()
    # The work queue: alice's DMs to bob leased, acked and nacked through the spool.
    second = alice.dm(bob.agent_id, "job 2")
    first = alice.dm(bob.agent_id, "job 1", priority="high")
    leased = bob.lease(10, lease_sec=30)
    acked = bob.ack(first["id"])
    nacked = bob.nack(second["id"], reason="not now", delay_sec=0)
    status = bob.message_status(first["id"])
    # wait_for: a long-poll on the roster, answered when one more agent registers.
    live = len(hub.call("GET", "/v1/agents")[1]["result"])
    joiner = threading.Timer(0.3, lambda: ArcClient.quickstart(f"late-{room}", hub.url))
    joiner.start()
    roster = bob.wait_for(live + 1, timeout=10)
    joiner.join()

    assert (answer["kind"], answer["body"], answer["from_agent"]) == ("task_result", "42", "carol")
    assert (delegated["kind"], delegated["from_agent"]) == ("task_result", "carol")
    assert ([r["body"] for r in asked["replies"]], asked["complete"]) == (["yes"], True)
    assert [r["id"] for r in gathered] == [r["id"] for r in asked["replies"]]
    results = {answer["id"], delegated["id"]}  # carol's answers are DMs in bob's inbox too
    assert [m["id"] for m in leased if m["id"] not in results] == [first["id"], second["id"]]
    assert leased[0]["id"] == first["id"]  # high priority first
    assert acked == 1
    assert nacked["state"] in ("queued", "failed")
    assert [r["state"] for r in status["recipients"]] == ["acked"]
    assert f"late-{room}" in {a["agent_id"] for a in roster}


@pytest.mark.live
def test_an_admin_key_in_the_envelope_closes_a_room(spool: Path, admin_key: str, bob: ArcClient, room: str) -> None:
    root = ArcClient.over_relay("root", spool, timeout=10, key=admin_key)

    with pytest.raises(ArcError) as refused:
        bob.close_room(room)  # no key: a loopback caller, not an admin
    closed = root.close_room(room)
    with pytest.raises(ArcError) as posting:
        bob.post(room, "too late")

    assert refused.value.status == 403
    assert (closed["name"], closed["closed"], closed["closed_by"]) == (room, True, "root")
    assert posting.value.status == 409


@pytest.mark.live
def test_agent_ids_arcs_sanitiser_changes_still_round_trip(spool: Path, alice: ArcClient, room: str) -> None:
    odd = ArcClient.over_relay("ops bot@ci", spool, timeout=10)
    odd.register()
    odd.post(room, "hi")
    inbox = alice.dm("ops bot@ci", "for you")
    leased = odd.lease(5)  # the agent id travels percent-encoded in the path: /v1/inbox/ops%20bot%40ci/lease

    assert (spool / "requests" / "ops_bot_ci").is_dir()
    assert alice.poll(timeout=5, channel=room)[0]["from_agent"] == "ops bot@ci"
    assert [m["id"] for m in leased] == [inbox["id"]]


# ── stream() over the relay ───────────────────────────────────────────────


@pytest.mark.live
def test_stream_yields_messages_posted_over_http_and_close_stops_it(
    bob: ArcClient, alice: ArcClient, room: str
) -> None:
    reader = Reader(bob)
    time.sleep(0.3)  # the first long-poll is waiting
    posted_at = time.monotonic()
    first = alice.post(room, "one")
    bob.post(room, "my own")  # excluded, as over SSE
    second = alice.dm("bob", "two")
    items = reader.take_timed(2)
    stopped_in = reader.stop()

    assert [item["id"] for _, item in items] == [first["id"], second["id"]]
    assert items[0][0] - posted_at < PUSH_SEC
    assert bob.since_id == second["id"]  # one cursor with poll()
    assert bob.poll(timeout=0) == []
    assert stopped_in < 1.0  # close() does not wait for the pending 25 s long-poll


@pytest.mark.live
def test_stream_resumes_after_since_id(bob: ArcClient, alice: ArcClient, room: str) -> None:
    before = alice.post(room, "before")
    after = alice.post(room, "after")
    reader = Reader(bob, since_id=before["id"])

    assert [m["id"] for m in reader.take(1)] == [after["id"]]
    reader.stop()


@pytest.mark.live
def test_stream_of_rooms_narrows_broadcasts_but_not_direct_messages(
    hub: Hub, bob: ArcClient, alice: ArcClient, room: str
) -> None:
    elsewhere = create_room(hub, f"{room}-elsewhere")
    reader = Reader(bob, channels=[room, f"{room}-other"])
    alice.post(elsewhere, "not followed")
    inside = alice.post(room, "followed")
    direct = alice.dm("bob", "direct")

    assert [m["id"] for m in reader.take(2)] == [inside["id"], direct["id"]]
    reader.stop()
    assert bob.since_id == direct["id"]


@pytest.mark.live
def test_a_stream_of_one_room_ends_when_the_room_closes(
    hub: Hub, admin_key: str, bob: ArcClient, alice: ArcClient, room: str
) -> None:
    reader = Reader(bob, channels=room)
    last = alice.post(room, "last words")
    close_room(hub, admin_key, room)

    items = reader.take(2)
    assert items[0]["id"] == last["id"]
    assert (items[1]["kind"], items[1]["metadata"]["room_action"]) == ("notice", "closed")
    assert reader.ended(5)


@pytest.mark.live
def test_a_stream_of_a_room_already_closed_reads_its_backlog_and_ends(
    hub: Hub, admin_key: str, bob: ArcClient, alice: ArcClient, room: str
) -> None:
    alice.post(room, "before the close")
    close_room(hub, admin_key, room)

    bob.bootstrap()  # the cursor moves past the close
    caught_up = Reader(bob, channels=room)
    assert caught_up.ended(5)
    assert caught_up.items.empty()
    from_start = Reader(bob, channels=room, since_id=0)
    assert from_start.ended(5)
    bodies = [item["body"] for _, item in list(from_start.items.queue) if item["channel"] == room]
    assert bodies[0] == "before the close"
    assert "closed this room" in bodies[-1]


@pytest.mark.live
def test_stream_refuses_named_events_over_the_relay(bob: ArcClient) -> None:
    with pytest.raises(ArcError) as refused:
        next(bob.stream(types=["message", "claim"]))

    assert refused.value.status == 400
    assert "claim events come only over HTTP" in refused.value.error


# ── Keys ──────────────────────────────────────────────────────────────────


@pytest.mark.live
def test_a_key_in_the_envelope_acts_as_its_agent(spool: Path, hub: Hub, room: str) -> None:
    key = mint_key(hub, "dave")
    dave = ArcClient.over_relay("dave", spool, timeout=10, key=key)
    mallory = ArcClient.over_relay("mallory", spool, timeout=10, key=key)
    forged = ArcClient.over_relay("dave", spool, timeout=10, key="arc_not_a_key")

    posted = dave.post(room, "signed")
    with pytest.raises(ArcError) as not_hers:
        mallory.post(room, "pretending")
    with pytest.raises(ArcError) as unknown:
        forged.post(room, "forged")

    assert posted["from_agent"] == "dave"
    assert not_hers.value.status == 403
    assert unknown.value.status == 401
    sent = [json.loads(p.read_text()) for p in (spool / "requests" / "dave").glob("*.work")]
    assert sorted(r.get("key") for r in sent) == sorted([key, "arc_not_a_key"])


# ── Failures of the spool itself ──────────────────────────────────────────


def test_no_relay_running_is_a_598_within_the_timeout(tmp_path: Path) -> None:
    spool = tmp_path / "nobody-serves-this"
    bob = ArcClient.over_relay("bob", spool, timeout=0.5)
    started = time.monotonic()

    with pytest.raises(ArcError) as timed_out:
        bob.post("general", "anyone?")

    assert 0.5 <= time.monotonic() - started < 1.5
    assert timed_out.value.status == RELAY_TIMEOUT_STATUS
    assert str(spool) in timed_out.value.error
    assert "relay" in timed_out.value.error
    assert len(list((spool / "requests" / "bob").glob("*.json"))) == 1  # written, never taken, not deleted


def test_a_stream_over_a_dead_relay_raises_or_retries_until_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "RELAY_STREAM_POLL_SEC", 0.1)
    bob = ArcClient.over_relay("bob", tmp_path / "spool", timeout=0.2)

    with pytest.raises(ArcError) as lost:
        next(bob.stream(reconnect=False))
    retrying = Reader(bob)
    time.sleep(1.0)

    assert lost.value.status == RELAY_TIMEOUT_STATUS
    assert retrying.error is None
    assert retrying.thread.is_alive()  # still retrying: the relay may come up
    retrying.stop()
    assert len(list((tmp_path / "spool" / "requests" / "bob").glob("*.json"))) >= 2


@pytest.mark.parametrize("kind", ["requests", "responses"])
def test_a_symlinked_agent_directory_is_refused(tmp_path: Path, kind: str) -> None:
    spool, elsewhere = tmp_path / "spool", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (spool / kind).mkdir(parents=True)
    (spool / kind / "bob").symlink_to(elsewhere, target_is_directory=True)
    bob = ArcClient.over_relay("bob", spool, timeout=0.5)

    with pytest.raises(ArcError) as refused:
        bob.post("general", "through the link?")

    assert refused.value.status == RELAY_WRITE_ERROR_STATUS
    assert "symbolic link" in refused.value.error
    assert str(spool / kind / "bob") in refused.value.error
    assert list(elsewhere.iterdir()) == []
    assert not (spool / "requests" / "bob").is_dir() or kind == "requests"  # refused before writing anything


def test_a_spool_that_cannot_be_written_is_a_597(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "requests").mkdir(parents=True)
    (spool / "requests" / "bob").write_text("a file where the agent's directory belongs")
    bob = ArcClient.over_relay("bob", spool, timeout=0.5)

    with pytest.raises(ArcError) as failed:
        bob.register()

    assert failed.value.status == RELAY_WRITE_ERROR_STATUS


@pytest.mark.parametrize("agent", ["bob", "ops bot/1", "../../etc", "  padded  ", "", "é-ü", "a//b", "x.y_z-1"])
def test_agent_directory_names_are_arcs(agent: str) -> None:
    arc = arcref.arc()
    assert spool_name(agent) == arc._safe_agent_id(agent)


@pytest.mark.parametrize("agent", [".", "..", " .. "])
def test_an_agent_id_naming_the_spool_itself_is_refused(tmp_path: Path, agent: str) -> None:
    with pytest.raises(ArcError) as refused:
        ArcClient.over_relay(agent, tmp_path)

    assert refused.value.status == 400
    assert list(tmp_path.iterdir()) == []


def test_the_spool_path_is_taken_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bob = ArcClient.over_relay("bob", timeout=0.05)  # Arc's default, ./.arc-relay
    monkeypatch.chdir(os.path.dirname(tmp_path))

    with pytest.raises(ArcError):
        bob.whoami()

    assert len(list((tmp_path / ".arc-relay" / "requests" / "bob").glob("*.json"))) == 1


# ── Arc's own client against this hub's relay ─────────────────────────────


@pytest.mark.live
def test_arcs_over_relay_client_works_against_this_hubs_relay(
    spool: Path, alice: ArcClient, carol: ArcClient, room: str
) -> None:
    arc = arcref.arc()
    dora = arc.ArcClient.over_relay("dora", spool_dir=str(spool), timeout=10)

    session = dora.register(display_name="Dora")
    dora.bootstrap()
    posted = dora.post(room, "from Arc's client")
    claimed = dora.claim(f"{room}-task")
    to_dora = alice.dm("dora", "for Arc's client")
    polled = dora.poll(timeout=5)
    dm = dora.dm("alice", "back to alice")
    with pytest.raises(arc.ArcError) as refused:
        dora.claim("")

    assert session["agent_id"] == "dora"
    assert [m["id"] for m in carol.poll(timeout=5, channel=room)] == [posted["id"]]
    assert (claimed["owner_agent_id"], alice.claim(f"{room}-task")["owner_agent_id"]) == ("dora", "dora")
    assert [m["id"] for m in polled] == [to_dora["id"]]
    assert [m["id"] for m in alice.poll(timeout=5, channel="direct")] == [dm["id"]]
    assert str(refused.value) == "claim_key or task_message_id is required"
