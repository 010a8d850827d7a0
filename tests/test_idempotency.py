"""Retries that never duplicate: idempotency keys on every state change, at every door (docs/protocol.md).

Personas: ``alice`` holds a key and posts, delegates and claims; ``bob`` holds a key, receives and
leases; ``carol`` holds a key too, to show a key belongs to its agent.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import requests
from django.db import connection
from django.utils import timezone

from coordination.client import ArcClient
from coordination.core import idempotency, services
from coordination.core.models import Claim, Delivery, IdempotencyRecord, Message
from tests.conftest import Persona
from tests.hubproc import Hub, mint_key


def keyed(client: Persona, path: str, payload: Any, key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = client.client.post(path, json.dumps(payload), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
    return response.status_code, response.json(), dict(response.headers)


@pytest.fixture
def alice(db: None) -> Persona:
    services.rooms_ensure_defaults()
    return Persona("alice")


@pytest.fixture
def bob(db: None) -> Persona:
    return Persona("bob")


def test_a_repeat_gets_the_first_answer_marked_as_a_replay_and_changes_nothing(alice, bob):
    post = {"to_agent": "bob", "body": "deploy when green"}

    first = keyed(alice, "/v1/messages", post, "k-1")
    again = keyed(alice, "/v1/messages", post, "k-1")

    assert first[0] == again[0] == 201
    assert again[1]["result"] == first[1]["result"]
    assert again[1]["replayed"] is True
    assert "replayed" not in first[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    assert Message.objects.filter(body="deploy when green").count() == 1
    assert Delivery.objects.count() == 1


def test_the_same_key_for_another_request_is_a_409_naming_the_key(alice):
    keyed(alice, "/v1/messages", {"channel": "general", "body": "one"}, "k-2")

    status, env, _ = keyed(alice, "/v1/messages", {"channel": "general", "body": "two"}, "k-2")

    assert status == 409
    assert env["error"] == "idempotency key k-2 was used for another request; use a new key for a new request"
    assert not Message.objects.filter(body="two").exists()


def test_a_key_belongs_to_its_agent(alice):
    carol = Persona("carol")
    keyed(alice, "/v1/messages", {"channel": "general", "body": "alice's"}, "shared")

    status, env, _ = keyed(carol, "/v1/messages", {"channel": "general", "body": "carol's"}, "shared")

    assert (status, env["result"]["from_agent"]) == (201, "carol")


def test_every_state_change_takes_a_key(alice, bob):
    task = alice.post("/v1/tasks", {"to_agent": "bob", "body": "review"})[1]["result"]["id"]
    alice.post("/v1/messages", {"to_agent": "bob", "body": "work"})
    requests_ = [
        (bob, "/v1/claims", {"claim_key": "k"}),
        (bob, "/v1/claims/refresh", {"claim_key": "k"}),
        (bob, "/v1/locks", {"file_path": "src/a.py"}),
        (bob, "/v1/locks/release", {"file_path": "src/a.py"}),
        (bob, f"/v1/tasks/{task}/start", {}),
        (bob, "/v1/inbox/bob/lease", {"max": 5}),
        (bob, f"/v1/tasks/{task}/result", {"body": "LGTM"}),
        (alice, "/v1/tasks", {"to_agent": "bob", "body": "another"}),
        (alice, "/v1/sessions", {"capabilities": ["plan"]}),
    ]
    for who, path, payload in requests_:
        first = keyed(who, path, payload, f"key-{path}")
        again = keyed(who, path, payload, f"key-{path}")
        assert again[1].get("replayed") is True, path
        assert again[1]["result"] == first[1]["result"], path
    assert Message.objects.filter(kind="task_result").count() == 1
    assert Message.objects.filter(kind="task_request").count() == 2


def test_a_refusal_is_an_answer_too_but_the_rate_limit_is_not(alice, settings):
    first = keyed(alice, "/v1/tasks/4242/complete", {}, "k-3")
    again = keyed(alice, "/v1/tasks/4242/complete", {}, "k-3")
    assert first[:2] == again[:2] == (404, {"ok": False, "error": "task not found"})

    settings.ARC_RATE_LIMIT = (1, 3600.0, 1)
    assert keyed(alice, "/v1/messages", {"channel": "general", "body": "a"}, "k-4")[0] == 201
    limited = keyed(alice, "/v1/messages", {"channel": "general", "body": "b"}, "k-5")
    assert limited[0] == 429
    assert not IdempotencyRecord.objects.filter(key="k-5").exists()  # the retry, later, may go through


def test_a_bad_key_is_a_400(alice):
    status, env, _ = keyed(alice, "/v1/messages", {"channel": "general", "body": "x"}, "k" * 201)

    assert (status, env["error"]) == (400, "an idempotency key must be 1 to 200 printable characters")


@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_are_decided_once():
    # Eight copies of one request at once, each on its own connection: one is done, seven replay it.
    services.rooms_ensure_defaults()
    _, secret = services.key_mint(agent_id="alice")

    def send(_: int) -> tuple[int, dict[str, Any]]:
        from django.test import Client

        client = Client(headers={"Authorization": f"Bearer {secret}"})
        try:
            response = client.post(
                "/v1/claims", {"claim_key": "race"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="same"
            )
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))

    assert {status for status, _ in answers} == {201}
    assert sum(1 for _, env in answers if env.get("replayed")) == 7
    assert len({json.dumps(env["result"], sort_keys=True) for _, env in answers}) == 1
    assert Claim.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_the_sweeper_forgets_records_past_their_retention(alice):
    keyed(alice, "/v1/messages", {"channel": "general", "body": "old"}, "old-key")
    keyed(alice, "/v1/messages", {"channel": "general", "body": "new"}, "new-key")
    IdempotencyRecord.objects.filter(key="old-key").update(expires_at=timezone.now() - timedelta(seconds=1))

    assert idempotency.records_expire() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new-key"]


# ── Retries through a link that loses answers ──────────────────────────────


class _LossyProxy(BaseHTTPRequestHandler):
    """Forwards each request to the hub; the first answer to each idempotency key never comes back.

    The hub has done the work by then: this is a client that timed out after the hub committed.
    """

    protocol_version = "HTTP/1.1"
    upstream: ClassVar[str] = ""
    seen: ClassVar[set[str]] = set()
    lost: ClassVar[list[str]] = []

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(self.command, self.upstream + self.path, data=body, headers=headers, timeout=60)
        key = self.headers.get("Idempotency-Key")
        if key is not None and key not in self.seen:
            type(self).seen.add(key)
            type(self).lost.append(f"{self.command} {self.path}")
            self.close_connection = True
            return  # the hub answered; the client never hears it
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Idempotent-Replayed", "X-Arc-Instance"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def lossy(live_hub: Hub) -> Iterator[tuple[str, type[_LossyProxy]]]:
    handler = type("Lossy", (_LossyProxy,), {"upstream": live_hub.url, "seen": set(), "lost": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.live
def test_the_client_retries_a_lost_answer_and_nothing_is_done_twice(live_hub: Hub, lossy) -> None:
    url, proxy = lossy
    alice = ArcClient("alice", url, key=mint_key(live_hub, "alice"))
    bob = ArcClient("bob", url, key=mint_key(live_hub, "bob"))
    direct = ArcClient("observer", live_hub.url)  # reads the truth, past the lossy link

    alice.register()
    bob.register()
    message = alice.dm("bob", "exactly once, please")
    claim = bob.claim("parser-fix")
    leased = bob.lease(5, lease_sec=60)
    acked = bob.ack([message["id"]])

    # Every state change lost its first answer, was retried with its key, and got the first answer.
    assert proxy.lost == [
        "POST /v1/sessions",
        "POST /v1/sessions",
        "POST /v1/messages",
        "POST /v1/claims",
        "POST /v1/inbox/bob/lease",
        "POST /v1/deliveries/ack",
    ]
    inbox = direct.call_hub("GET", "/v1/inbox/bob")
    assert [m["body"] for m in inbox] == ["exactly once, please"]
    assert message["id"] == inbox[0]["id"]
    assert claim["owner_agent_id"] == "bob"
    assert [m["id"] for m in leased] == [message["id"]]
    assert leased[0]["delivery"]["attempts"] == 1  # leased once, not once per try
    assert acked == 1
    [delivery] = direct.call_hub("GET", "/v1/deliveries", params={"agent_id": "bob"})
    assert (delivery["state"], delivery["attempts"]) == ("acked", 1)
    claims = direct.call_hub("GET", "/v1/claims")
    assert [c["claim_key"] for c in claims] == ["parser-fix"]


@pytest.mark.live
def test_a_relayed_request_carries_its_key_and_a_resent_file_is_answered_once(live_hub: Hub) -> None:
    from tests.parity.doors import Relay

    relay = Relay(live_hub)
    spool = relay.spool
    from coordination.client import relay_request, spool_write

    key = uuid.uuid4().hex
    answers = []
    for _ in range(2):  # the same request, written twice (a sandbox that gave up waiting and resent it)
        envelope = relay_request(
            "alice", "POST", "/v1/messages", {"from_agent": "alice", "body": "once"}, idempotency_key=key
        )
        folder = spool / "requests" / "alice"
        folder.mkdir(parents=True, exist_ok=True)
        spool_write(folder / f"{envelope['request_id']}.json", json.dumps(envelope).encode())
        answer_path = spool / "responses" / "alice" / f"{envelope['request_id']}.json"
        for _ in range(6000):
            if answer_path.exists():
                break
            threading.Event().wait(0.01)
        answers.append(json.loads(answer_path.read_text()))

    assert [a["status"] for a in answers] == [201, 201]
    assert answers[0]["body"]["result"] == answers[1]["body"]["result"]
    assert answers[1]["body"]["replayed"] is True
    assert len(live_hub.call("GET", "/v1/search?q=once")[1]["result"]) == 1
