"""``coordination.client.ArcClient`` against a real hub process.

Personas: ``alice`` coordinates and asks for work (RPC caller); ``bob`` is the worker
that claims, locks and answers; ``carol`` is a bystander who must not see DMs between them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from coordination.client import TRANSPORT_ERROR_STATUS, ArcClient, ArcError
from tests.hubproc import Hub

pytestmark = pytest.mark.live

# How long after the worker's answer call() may take to return. Arc's call() re-reads
# the channel once a second, so an answer stored 1.2 s after the request waits ~0.8 s
# for its next read; a long-polled result arrives well inside this.
FAST_SEC = 0.5
ANSWER_DELAY_SEC = 1.2


@pytest.fixture
def alice(live_hub: Hub) -> ArcClient:
    client = ArcClient.quickstart("alice", live_hub.url, capabilities=["plan"])
    client.bootstrap()
    return client


@pytest.fixture
def bob(live_hub: Hub) -> ArcClient:
    client = ArcClient.quickstart("bob", live_hub.url, capabilities=["code"])
    client.bootstrap()
    return client


def test_it_registers_a_session_with_capabilities(live_hub: Hub, alice: ArcClient) -> None:
    session = alice.register(display_name="Alice", capabilities=["plan", "review"])
    assert session["agent_id"] == "alice"
    assert session["capabilities"] == ["plan", "review"]
    me = alice.whoami()
    assert me["session"]["session_id"] == session["session_id"]
    status, agents = live_hub.call("GET", "/v1/agents?capability=review")
    assert status == 200
    assert [a["agent_id"] for a in agents["result"]] == ["alice"]


def test_it_posts_and_polls_without_own_messages(alice: ArcClient, bob: ArcClient) -> None:
    posted = alice.post("general", "hello bob", thread_id="t-hello")
    assert posted["from_agent"] == "alice"
    assert posted["thread_id"] == "t-hello"

    seen = bob.poll(timeout=5)
    assert [(m["id"], m["body"]) for m in seen] == [(posted["id"], "hello bob")]
    assert bob.since_id == posted["id"]
    assert alice.poll(timeout=0) == []  # exclude_self is the default
    assert [m["body"] for m in alice.poll(timeout=0, exclude_self=False)] == ["hello bob"]
    assert bob.poll(timeout=0) == []  # since_id moved past it


def test_poll_returns_as_soon_as_a_message_arrives(alice: ArcClient, bob: ArcClient) -> None:
    timer = threading.Timer(0.3, lambda: alice.post("general", "wake up"))
    timer.start()
    started = time.monotonic()
    seen = bob.poll(timeout=20)
    elapsed = time.monotonic() - started
    timer.join()
    assert [m["body"] for m in seen] == ["wake up"]
    assert elapsed < 5


def test_direct_messages_reach_only_their_recipient(live_hub: Hub, alice: ArcClient, bob: ArcClient) -> None:
    carol = ArcClient.quickstart("carol", live_hub.url)
    carol.bootstrap()
    dm = alice.dm("bob", "psst")
    assert (dm["to_agent"], dm["channel"]) == ("bob", "direct")
    assert [m["body"] for m in bob.poll(timeout=5)] == ["psst"]
    assert carol.poll(timeout=0) == []


def test_claims_have_one_owner_until_released(alice: ArcClient, bob: ArcClient) -> None:
    claim = bob.claim("build-1", thread_id="t1", ttl_sec=60)
    assert claim["owner_agent_id"] == "bob"
    assert alice.claim("build-1", ttl_sec=60)["owner_agent_id"] == "bob"

    refreshed = bob.refresh_claim("build-1", ttl_sec=600)
    assert refreshed["expires_at"] > claim["expires_at"]
    assert bob.release("build-1")["released_at"] is not None
    assert alice.claim("build-1", ttl_sec=60)["owner_agent_id"] == "alice"


def test_locks_have_one_holder_until_unlocked(alice: ArcClient, bob: ArcClient) -> None:
    assert bob.lock("src/app.py", ttl_sec=60)["agent_id"] == "bob"
    assert alice.lock("src/app.py", ttl_sec=60)["agent_id"] == "bob"
    assert bob.unlock("src/app.py")["released_at"] is not None
    assert alice.lock("src/app.py", ttl_sec=60)["agent_id"] == "alice"


def test_completing_the_last_subtask_completes_the_parent(live_hub: Hub, alice: ArcClient, bob: ArcClient) -> None:
    parent = alice.post("general", "build it", kind="task")
    child = alice.post("general", "part one", kind="task", parent_task_id=parent["id"])
    done = bob.complete_task(child["id"])
    assert (done["task_id"], done["status"]) == (child["id"], "done")
    status, tasks = live_hub.call("GET", "/v1/tasks?status=done")
    assert status == 200
    assert {parent["id"], child["id"]} <= {t["task_id"] for t in tasks["result"]}


def test_it_raises_arc_error_with_the_hubs_message_and_status(alice: ArcClient) -> None:
    with pytest.raises(ArcError) as unknown_channel:
        alice.post("no-such-room", "hello")
    assert unknown_channel.value.status == 400
    assert "channel does not exist" in unknown_channel.value.error

    with pytest.raises(ArcError) as unknown_task:
        alice.complete_task(999_999)
    assert unknown_task.value.status == 404
    assert "task not found" in str(unknown_task.value)

    with pytest.raises(ArcError) as bad_ttl:
        alice.claim("k", ttl_sec=0)
    assert bad_ttl.value.status == 400
    assert "ttl_sec" in bad_ttl.value.error


def test_it_raises_arc_error_when_the_hub_cannot_be_reached() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ArcClient("alice", f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ArcError) as refused:
        client.register()
    assert refused.value.status == TRANSPORT_ERROR_STATUS
    assert "cannot reach the hub" in refused.value.error
    assert f"127.0.0.1:{port}" in refused.value.error


class _RecordingHandler(BaseHTTPRequestHandler):
    """Answers every request with ``reply`` and records its headers (a stand-in for a hub)."""

    seen: ClassVar[list[dict[str, str]]] = []
    reply: ClassVar[tuple[int, str, bytes]] = (200, "application/json", b'{"ok": true, "result": {}}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(dict(self.headers))
        status, content_type, body = type(self).reply
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[tuple[str, type[_RecordingHandler]]]:
    handler = type("Handler", (_RecordingHandler,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_it_sends_the_agent_key_as_a_bearer_token(fake_hub: tuple[str, type[_RecordingHandler]]) -> None:
    url, handler = fake_hub
    ArcClient("alice", url, key="arc_secret").register()
    ArcClient("bob", url).register()
    assert [headers.get("Authorization") for headers in handler.seen] == ["Bearer arc_secret", None]


def test_a_non_json_answer_is_an_arc_error(fake_hub: tuple[str, type[_RecordingHandler]]) -> None:
    url, handler = fake_hub
    handler.reply = (502, "text/html", b"<html>Bad Gateway</html>")
    with pytest.raises(ArcError) as bad_gateway:
        ArcClient("alice", url).register()
    assert bad_gateway.value.status == 502
    assert "did not answer with JSON" in bad_gateway.value.error


def _answer(
    worker: ArcClient, reply: Callable[[dict[str, Any]], dict[str, Any]], delay: float, answered: dict[str, Any]
) -> threading.Thread:
    """Serve one task_request: wait ``delay`` s, reply, and record when the reply was stored."""

    def serve() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for message in worker.poll(timeout=1):
                if message["kind"] == "task_request":
                    time.sleep(delay)
                    answered["message"] = reply(message)
                    answered["at"] = time.monotonic()
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_call_receives_a_result_sent_as_a_direct_message(live_hub: Hub, alice: ArcClient, bob: ArcClient) -> None:
    answered: dict[str, Any] = {}
    worker = _answer(
        bob,
        lambda req: bob.dm(req["from_agent"], "42", kind="task_result", reply_to=req["id"]),
        delay=ANSWER_DELAY_SEC,
        answered=answered,
    )
    result = alice.call("bob", "what is 6*7?", timeout=20)
    returned_at = time.monotonic()
    worker.join(5)

    assert result["id"] == answered["message"]["id"]
    assert (result["body"], result["kind"], result["to_agent"]) == ("42", "task_result", "alice")
    assert returned_at - answered["at"] < FAST_SEC
    status, tasks = live_hub.call("GET", "/v1/tasks?status=done")
    assert status == 200
    assert result["reply_to"] in {t["task_id"] for t in tasks["result"]}


def test_call_receives_a_result_posted_to_the_channel(alice: ArcClient, bob: ArcClient) -> None:
    answered: dict[str, Any] = {}
    worker = _answer(
        bob,
        lambda req: bob.post(req["channel"], "42", kind="task_result", reply_to=req["id"]),
        delay=ANSWER_DELAY_SEC,
        answered=answered,
    )
    result = alice.call("bob", "what is 6*7?", channel="general", timeout=20)
    returned_at = time.monotonic()
    worker.join(5)

    assert result["id"] == answered["message"]["id"]
    assert (result["body"], result["channel"], result["to_agent"]) == ("42", "general", None)
    assert returned_at - answered["at"] < FAST_SEC
    # call() does not consume alice's poll position: the result is still news to poll().
    assert result["id"] in {m["id"] for m in alice.poll(timeout=0)}


def test_call_times_out_with_status_408_when_nobody_answers(live_hub: Hub, alice: ArcClient) -> None:
    started = time.monotonic()
    with pytest.raises(ArcError) as timed_out:
        alice.call("carol", "anyone there?", timeout=0.5)
    assert timed_out.value.status == 408
    assert 0.5 <= time.monotonic() - started < 5
    status, tasks = live_hub.call("GET", "/v1/tasks?status=open")
    assert status == 200
    assert [t["status"] for t in tasks["result"]] == ["open"]
